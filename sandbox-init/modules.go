//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// modulesDir holds the kernel modules of the initramfs and load.order, the
// list of the ones to load: one file name (relative to modulesDir) a line,
// dependencies first, '#' starts a comment line. The initramfs builder
// writes it; no modules.dep is needed.
const modulesDir = "/lib/modules"

// parseLoadOrder returns the module files listed in a load.order file.
func parseLoadOrder(content string) ([]string, error) {
	var files []string
	for i, line := range strings.Split(content, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if filepath.IsAbs(line) || filepath.Clean(line) != line || strings.HasPrefix(line, "..") {
			return nil, fmt.Errorf("line %d: %q is not a path inside %s", i+1, line, modulesDir)
		}
		if !strings.HasSuffix(line, ".ko") && moduleCompression(line) == "" {
			return nil, fmt.Errorf("line %d: %q is not a kernel module (.ko, .ko.xz, .ko.zst, .ko.gz)", i+1, line)
		}
		files = append(files, line)
	}
	return files, nil
}

// moduleCompression returns the compression suffix of a module file name,
// or "" for an uncompressed module.
func moduleCompression(name string) string {
	for _, suffix := range []string{".ko.xz", ".ko.zst", ".ko.gz"} {
		if strings.HasSuffix(name, suffix) {
			return suffix
		}
	}
	return ""
}

// loadModules loads the modules listed in dir/load.order, in order, and
// returns how many it loaded. No load.order means a kernel with its drivers
// built in.
func loadModules(dir string) (int, error) {
	content, err := os.ReadFile(filepath.Join(dir, "load.order"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	files, err := parseLoadOrder(string(content))
	if err != nil {
		return 0, fmt.Errorf("%s/load.order: %w", dir, err)
	}
	for _, name := range files {
		if err := loadModule(filepath.Join(dir, name)); err != nil {
			return 0, fmt.Errorf("load module %s: %w", name, err)
		}
	}
	return len(files), nil
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	if moduleCompression(path) != "" {
		// The kernel decompresses it (CONFIG_MODULE_DECOMPRESS).
		flags |= unix.MODULE_INIT_COMPRESSED_FILE
	}
	err = unix.FinitModule(int(f.Fd()), "", flags)
	if errors.Is(err, unix.EEXIST) {
		return nil // built in, or already loaded
	}
	return err
}
