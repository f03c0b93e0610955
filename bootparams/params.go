// Package bootparams is the contract between the host and sandbox-init that
// travels on the guest kernel's command line: the sandbox.* parameters,
// specified in CMDLINE.md. The host (native/lane and the engines in vmm/)
// builds a Params and Encodes it; init Parses /proc/cmdline back into the
// same Params. One codec on both sides, so a field cannot be spelled two
// ways, and one Params value per boot, so no engine appends a second copy of
// a parameter and relies on which one init reads last.
//
// The command line is the only channel init can read before it has a root
// filesystem and channels to the host, which is why this contract exists at
// all; the kernel truncates a command line past COMMAND_LINE_SIZE (2048
// bytes on x86) without a word, so Encode refuses to produce one that would
// not fit.
package bootparams

import (
	"cmp"
	"fmt"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Version is the contract version this tree speaks (CMDLINE.md's history).
// Encode writes it as sandbox.v; Parse refuses any other, so an initrd and a
// host from different releases fail the boot saying so, rather than
// misreading each other.
const Version = 1

// MaxEncodedLen bounds what Encode returns. The kernel keeps 2047 bytes of
// command line on x86; the engines' own parameters (console, panic, timer
// options) take about 300 of them.
const MaxEncodedLen = 1536

// Defaults of the parameters that have one.
const (
	DefaultRootDevice = "/dev/vda"
	DefaultRootFSType = "ext4"
	DefaultHostname   = "sandbox"
)

// Params is everything the command line tells init.
type Params struct {
	// RootDevice is the root block device (an absolute, clean path); empty
	// means DefaultRootDevice. Ignored when RootNBD is set.
	RootDevice string
	// RootNBD, when set, is the channel on which the host serves the root
	// disk over NBD (export "root"); init attaches it and mounts that.
	RootNBD string
	// RootFSType is the root's filesystem type; empty means
	// DefaultRootFSType.
	RootFSType string
	// RootWritable mounts the root read-write; the default is read-only.
	RootWritable bool
	// Hostname is the guest's hostname; empty means DefaultHostname.
	Hostname string
	// VsockPorts, when non-nil, says that channels are vsock streams to the
	// host, and maps each channel name to its port. Nil: virtio-serial
	// ports found by name.
	VsockPorts map[string]uint32
	// Mounts are host filesystems served over FUSE, one per channel.
	Mounts []Mount
	// Net configures eth0; nil means the VM has no NIC.
	Net *Net
}

// Mount is one host filesystem.
type Mount struct {
	Channel  string
	ReadOnly bool
	Target   string // absolute and clean, not "/"
}

// Net is eth0's configuration.
type Net struct {
	IP4      netip.Prefix // required
	Gateway4 netip.Addr   // required
	IP6      netip.Prefix // optional, configured without DAD
	Gateway6 netip.Addr   // optional
	DNS      []netip.Addr // resolvers for /etc/resolv.conf
	MTU      int          // required, 68..65535
}

// Root returns the root device and filesystem type with defaults applied.
func (p Params) Root() (device, fsType string) {
	device, fsType = p.RootDevice, p.RootFSType
	if device == "" {
		device = DefaultRootDevice
	}
	if fsType == "" {
		fsType = DefaultRootFSType
	}
	return device, fsType
}

// HostnameOrDefault returns Hostname with its default applied.
func (p Params) HostnameOrDefault() string {
	if p.Hostname == "" {
		return DefaultHostname
	}
	return p.Hostname
}

// Encode renders p as sandbox.* parameters, sandbox.v first, each at most
// once. It fails if p breaks a rule of CMDLINE.md or does not fit in
// MaxEncodedLen; what it returns, Parse reads back as p.
func (p Params) Encode() (string, error) {
	params := []string{"sandbox.v=" + strconv.Itoa(Version)}
	add := func(key, value string) { params = append(params, "sandbox."+key+"="+value) }
	if p.RootNBD != "" {
		add("root", "nbd:"+p.RootNBD)
	} else if p.RootDevice != "" {
		add("root", p.RootDevice)
	}
	if p.RootFSType != "" {
		add("rootfstype", p.RootFSType)
	}
	if p.RootWritable {
		add("rootmode", "rw")
	}
	if p.Hostname != "" {
		add("hostname", p.Hostname)
	}
	if p.VsockPorts != nil {
		add("channels", encodeVsockPorts(p.VsockPorts))
	}
	if len(p.Mounts) > 0 {
		add("mounts", encodeMounts(p.Mounts))
	}
	if n := p.Net; n != nil {
		add("ip", n.IP4.String())
		add("gateway", n.Gateway4.String())
		if n.IP6.IsValid() {
			add("ip6", n.IP6.String())
		}
		if n.Gateway6.IsValid() {
			add("gateway6", n.Gateway6.String())
		}
		if len(n.DNS) > 0 {
			dns := make([]string, len(n.DNS))
			for i, a := range n.DNS {
				dns[i] = a.String()
			}
			add("dns", strings.Join(dns, ","))
		}
		add("mtu", strconv.Itoa(n.MTU))
	}
	s := strings.Join(params, " ")
	if len(s) > MaxEncodedLen {
		return "", fmt.Errorf("boot parameters take %d bytes, more than the %d the kernel command line leaves them (too many mounts?)", len(s), MaxEncodedLen)
	}
	// The rules live in Parse alone: what it refuses, Encode refuses.
	back, _, err := Parse(s)
	if err != nil {
		return "", fmt.Errorf("invalid boot parameters: %w", err)
	}
	if !back.equal(p) {
		return "", fmt.Errorf("invalid boot parameters: %q does not read back as given", s)
	}
	return s, nil
}

// equal compares what Encode preserves: a nil and an empty Mounts or DNS
// list encode alike.
func (p Params) equal(q Params) bool {
	if p.RootNBD != "" {
		p.RootDevice, q.RootDevice = "", ""
	}
	if (p.Net == nil) != (q.Net == nil) || p.Net != nil && !p.Net.equal(*q.Net) {
		return false
	}
	return p.RootDevice == q.RootDevice && p.RootNBD == q.RootNBD && p.RootFSType == q.RootFSType &&
		p.RootWritable == q.RootWritable && p.Hostname == q.Hostname &&
		(p.VsockPorts == nil) == (q.VsockPorts == nil) && mapsEqual(p.VsockPorts, q.VsockPorts) &&
		slices.Equal(p.Mounts, q.Mounts)
}

func (n Net) equal(m Net) bool {
	return n.IP4 == m.IP4 && n.Gateway4 == m.Gateway4 && n.IP6 == m.IP6 && n.Gateway6 == m.Gateway6 &&
		slices.Equal(n.DNS, m.DNS) && n.MTU == m.MTU
}

func mapsEqual(a, b map[string]uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// Parse reads the sandbox.* parameters of a whole kernel command line.
// Other parameters are the kernel's. An unknown sandbox.* parameter is
// returned as a warning (a newer host's optional parameter, or a typo, shows
// on the console without failing the boot); a missing or different
// sandbox.v, a parameter given twice, or an invalid value is an error.
func Parse(cmdline string) (p Params, warnings []string, err error) {
	seen := map[string]bool{}
	version := ""
	for _, param := range splitCmdline(cmdline) {
		key, value, _ := strings.Cut(param, "=")
		name, ok := strings.CutPrefix(key, "sandbox.")
		if !ok {
			continue
		}
		if !known[name] {
			warnings = append(warnings, fmt.Sprintf("unknown kernel parameter %s", key))
			continue
		}
		if seen[name] {
			return Params{}, nil, fmt.Errorf("%s given twice", key)
		}
		seen[name] = true
		if name == "v" {
			version = value
			continue
		}
		if err := p.set(name, value); err != nil {
			return Params{}, nil, fmt.Errorf("%s=%q: %w", key, value, err)
		}
	}
	if version != strconv.Itoa(Version) {
		if version == "" {
			return Params{}, nil, fmt.Errorf("no sandbox.v on the kernel command line: this init speaks boot parameters version %d and was started by something else; boot it through the sandbox library's engines", Version)
		}
		return Params{}, nil, fmt.Errorf("sandbox.v=%q: this init speaks boot parameters version %d; the host and the initrd come from different releases", version, Version)
	}
	if n := p.Net; n != nil && (!n.IP4.IsValid() || !n.Gateway4.IsValid() || n.MTU == 0) {
		return Params{}, nil, fmt.Errorf("network parameters need at least sandbox.ip, sandbox.gateway and sandbox.mtu")
	}
	return p, warnings, nil
}

// known are the parameter names after "sandbox." that this version reads.
var known = map[string]bool{
	"v": true, "root": true, "rootfstype": true, "rootmode": true, "hostname": true,
	"channels": true, "mounts": true,
	"ip": true, "gateway": true, "ip6": true, "gateway6": true, "dns": true, "mtu": true,
}

func (p *Params) set(name, value string) error {
	switch name {
	case "root":
		if ch, ok := strings.CutPrefix(value, "nbd:"); ok {
			if !validChannel(ch) {
				return fmt.Errorf("want nbd:<channel name of 1-64 of A-Za-z0-9._->")
			}
			p.RootNBD = ch
			return nil
		}
		if !filepath.IsAbs(value) || filepath.Clean(value) != value {
			return fmt.Errorf("want an absolute device path such as /dev/vda")
		}
		p.RootDevice = value
	case "rootfstype":
		if value == "" || strings.Trim(value, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
			return fmt.Errorf("want a filesystem type such as ext4")
		}
		p.RootFSType = value
	case "rootmode":
		switch value {
		case "ro":
			p.RootWritable = false
		case "rw":
			p.RootWritable = true
		default:
			return fmt.Errorf("want ro or rw")
		}
	case "hostname":
		if !validHostname(value) {
			return fmt.Errorf("want 1-64 letters, digits, '-' and '.'")
		}
		p.Hostname = value
	case "channels":
		ports, err := parseVsockPorts(value)
		if err != nil {
			return err
		}
		p.VsockPorts = ports
	case "mounts":
		mounts, err := parseMounts(value)
		if err != nil {
			return err
		}
		p.Mounts = mounts
	default: // the network
		if p.Net == nil {
			p.Net = &Net{}
		}
		return p.Net.set(name, value)
	}
	return nil
}

func (n *Net) set(name, value string) error {
	var err error
	switch name {
	case "ip":
		n.IP4, err = netip.ParsePrefix(value)
		if err == nil && !n.IP4.Addr().Is4() {
			err = fmt.Errorf("not IPv4")
		}
	case "ip6":
		n.IP6, err = netip.ParsePrefix(value)
		if err == nil && !n.IP6.Addr().Is6() {
			err = fmt.Errorf("not IPv6")
		}
	case "gateway":
		n.Gateway4, err = netip.ParseAddr(value)
		if err == nil && !n.Gateway4.Is4() {
			err = fmt.Errorf("not IPv4")
		}
	case "gateway6":
		n.Gateway6, err = netip.ParseAddr(value)
		if err == nil && !n.Gateway6.Is6() {
			err = fmt.Errorf("not IPv6")
		}
	case "dns":
		for _, a := range strings.Split(value, ",") {
			addr, perr := netip.ParseAddr(a)
			if perr != nil {
				return perr
			}
			n.DNS = append(n.DNS, addr)
		}
	case "mtu":
		n.MTU, err = strconv.Atoi(value)
		if err == nil && (n.MTU < 68 || n.MTU > 65535) {
			err = fmt.Errorf("out of range 68..65535")
		}
	}
	return err
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

const channelChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"

func validChannel(name string) bool {
	return name != "" && len(name) <= 64 && strings.Trim(name, channelChars) == ""
}

func validHostname(name string) bool {
	if name == "" || len(name) > 64 || name[0] == '-' || name[0] == '.' {
		return false
	}
	return strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") == ""
}

// encodeVsockPorts renders "vsock:<name>=<port>,..." sorted by port, so one
// map always gives one string.
func encodeVsockPorts(ports map[string]uint32) string {
	names := make([]string, 0, len(ports))
	for n := range ports {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int { return cmp.Compare(ports[a], ports[b]) })
	entries := make([]string, len(names))
	for i, n := range names {
		entries[i] = n + "=" + strconv.FormatUint(uint64(ports[n]), 10)
	}
	return "vsock:" + strings.Join(entries, ",")
}

// parseVsockPorts reads "vsock:<name>=<port>,..." with ports
// 1..4294967294, each name and port once.
func parseVsockPorts(value string) (map[string]uint32, error) {
	rest, ok := strings.CutPrefix(value, "vsock:")
	if !ok || rest == "" {
		return nil, fmt.Errorf("want vsock:<name>=<port>,...")
	}
	ports := map[string]uint32{}
	used := map[uint32]bool{}
	for _, entry := range strings.Split(rest, ",") {
		name, p, ok := strings.Cut(entry, "=")
		if !ok || !validChannel(name) {
			return nil, fmt.Errorf("%q: want <name>=<port> with a name of 1-64 of A-Za-z0-9._-", entry)
		}
		port, err := strconv.ParseUint(p, 10, 32)
		// 0xFFFFFFFF is VMADDR_PORT_ANY.
		if err != nil || port == 0 || port == 0xFFFFFFFF {
			return nil, fmt.Errorf("%q: port must be 1..4294967294", entry)
		}
		if _, dup := ports[name]; dup || used[uint32(port)] {
			return nil, fmt.Errorf("%q: name or port given twice", entry)
		}
		ports[name] = uint32(port)
		used[uint32(port)] = true
	}
	return ports, nil
}

// encodeMounts renders "<channel>:<ro|rw>:<target>,..." with the target
// percent-encoded, so ",", " " and "%" in it cannot split the list.
func encodeMounts(mounts []Mount) string {
	entries := make([]string, len(mounts))
	for i, m := range mounts {
		mode := "rw"
		if m.ReadOnly {
			mode = "ro"
		}
		entries[i] = m.Channel + ":" + mode + ":" + url.PathEscape(m.Target)
	}
	return strings.Join(entries, ",")
}

func parseMounts(value string) ([]Mount, error) {
	var mounts []Mount
	channels, targets := map[string]bool{}, map[string]bool{}
	for _, entry := range strings.Split(value, ",") {
		name, rest, ok1 := strings.Cut(entry, ":")
		mode, encoded, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("%q: want <channel>:<ro|rw>:<target>", entry)
		}
		if !validChannel(name) {
			return nil, fmt.Errorf("%q: channel name must be 1-64 of A-Za-z0-9._-", entry)
		}
		if mode != "ro" && mode != "rw" {
			return nil, fmt.Errorf("%q: mode must be ro or rw", entry)
		}
		target, err := url.PathUnescape(encoded)
		if err != nil {
			return nil, fmt.Errorf("%q: target: %w", entry, err)
		}
		if !filepath.IsAbs(target) || filepath.Clean(target) != target || target == "/" || strings.ContainsRune(target, 0) {
			return nil, fmt.Errorf("%q: target must be a clean absolute path other than /", entry)
		}
		if channels[name] || targets[target] {
			return nil, fmt.Errorf("%q: channel or target used twice", entry)
		}
		channels[name], targets[target] = true, true
		mounts = append(mounts, Mount{Channel: name, ReadOnly: mode == "ro", Target: target})
	}
	return mounts, nil
}
