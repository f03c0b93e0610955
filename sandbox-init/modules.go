//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/torkbot/sandbox/bootparams"
)

// modulesDir holds the kernel modules of the initramfs and load.order, the
// list of the ones to load: one file name (relative to modulesDir) a line,
// dependencies first, followed by the groups the module is loaded for (none:
// always); '#' starts a comment line. kernel/build.sh writes it; no
// modules.dep is needed.
const modulesDir = "/lib/modules"

// moduleGroups returns the module groups (kernel/modules.list) a boot with
// these parameters uses: those its features need, and those sandbox.modules
// names.
func moduleGroups(p bootparams.Params) map[string]bool {
	groups := map[string]bool{
		"network": p.Net != nil,
		"mounts":  len(p.Mounts) > 0,
		"vsock":   p.VsockPorts != nil,
		"nbd":     p.RootNBD != "",
	}
	for _, g := range p.Modules {
		groups[g] = true
	}
	return groups
}

// moduleEntry is one line of load.order.
type moduleEntry struct {
	file   string
	groups []string // empty: always loaded
}

// parseLoadOrder returns the modules listed in a load.order file.
func parseLoadOrder(content string) ([]moduleEntry, error) {
	var entries []moduleEntry
	for i, line := range strings.Split(content, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		file := fields[0]
		if filepath.IsAbs(file) || filepath.Clean(file) != file || strings.HasPrefix(file, "..") {
			return nil, fmt.Errorf("line %d: %q is not a path inside %s", i+1, file, modulesDir)
		}
		if !strings.HasSuffix(file, ".ko") && moduleCompression(file) == "" {
			return nil, fmt.Errorf("line %d: %q is not a kernel module (.ko, .ko.xz, .ko.zst, .ko.gz)", i+1, file)
		}
		e := moduleEntry{file: file}
		if len(fields) > 1 {
			e.groups = fields[1:]
		}
		entries = append(entries, e)
	}
	return entries, nil
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

// loadModules loads the modules listed in dir/load.order, in order, that
// are always loaded or belong to a group this boot uses, and returns how
// many it loaded. No load.order means a kernel with its drivers built in.
func loadModules(dir string, groups map[string]bool) (int, error) {
	content, err := os.ReadFile(filepath.Join(dir, "load.order"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	entries, err := parseLoadOrder(string(content))
	if err != nil {
		return 0, fmt.Errorf("%s/load.order: %w", dir, err)
	}
	n := 0
	for _, e := range entries {
		if len(e.groups) > 0 && !slices.ContainsFunc(e.groups, func(g string) bool { return groups[g] }) {
			continue
		}
		if err := loadModule(filepath.Join(dir, e.file)); err != nil {
			return 0, fmt.Errorf("load module %s: %w", e.file, err)
		}
		n++
	}
	return n, nil
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
