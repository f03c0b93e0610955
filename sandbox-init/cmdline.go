//go:build linux

package main

import (
	"fmt"
	"path/filepath"
	"strings"
)

// bootConfig is what the kernel command line tells init; see README.md.
type bootConfig struct {
	root         string // sandbox.root: the root block device
	rootFSType   string // sandbox.rootfstype
	rootReadOnly bool   // sandbox.rootmode=ro|rw
	hostname     string // sandbox.hostname
}

func defaultBootConfig() bootConfig {
	return bootConfig{
		root:         "/dev/vda",
		rootFSType:   "ext4",
		rootReadOnly: true,
		hostname:     "sandbox",
	}
}

// parseCmdline reads the sandbox.* parameters of a kernel command line.
// Other parameters are the kernel's; unknown sandbox.* ones are returned as
// warnings so that a typo shows on the console without failing the boot.
func parseCmdline(cmdline string) (cfg bootConfig, warnings []string, err error) {
	cfg = defaultBootConfig()
	for _, param := range splitCmdline(cmdline) {
		key, value, _ := strings.Cut(param, "=")
		if !strings.HasPrefix(key, "sandbox.") {
			continue
		}
		switch key {
		case "sandbox.root":
			if !filepath.IsAbs(value) || filepath.Clean(value) != value {
				return cfg, nil, fmt.Errorf("sandbox.root=%q: want an absolute device path such as /dev/vda", value)
			}
			cfg.root = value
		case "sandbox.rootfstype":
			if value == "" || strings.Trim(value, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
				return cfg, nil, fmt.Errorf("sandbox.rootfstype=%q: want a filesystem type such as ext4", value)
			}
			cfg.rootFSType = value
		case "sandbox.rootmode":
			switch value {
			case "ro":
				cfg.rootReadOnly = true
			case "rw":
				cfg.rootReadOnly = false
			default:
				return cfg, nil, fmt.Errorf("sandbox.rootmode=%q: want ro or rw", value)
			}
		case "sandbox.hostname":
			if !validHostname(value) {
				return cfg, nil, fmt.Errorf("sandbox.hostname=%q: want 1-64 letters, digits, '-' and '.'", value)
			}
			cfg.hostname = value
		default:
			warnings = append(warnings, fmt.Sprintf("unknown kernel parameter %s", key))
		}
	}
	return cfg, warnings, nil
}

// splitCmdline splits a command line into parameters as the kernel does:
// on spaces outside double quotes, the quotes removed. Parameters after
// "--" belong to init's argv and are not returned.
func splitCmdline(cmdline string) []string {
	var params []string
	var cur strings.Builder
	inQuotes, inParam := false, false
	flush := func() bool {
		if !inParam {
			return true
		}
		p := cur.String()
		cur.Reset()
		inParam = false
		if p == "--" {
			return false
		}
		params = append(params, p)
		return true
	}
	for _, r := range cmdline {
		switch {
		case r == '"':
			inQuotes = !inQuotes
			inParam = true
		case !inQuotes && (r == ' ' || r == '\t' || r == '\n'):
			if !flush() {
				return params
			}
		default:
			cur.WriteRune(r)
			inParam = true
		}
	}
	flush()
	return params
}

func validHostname(name string) bool {
	if name == "" || len(name) > 64 || name[0] == '-' || name[0] == '.' {
		return false
	}
	return strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") == ""
}
