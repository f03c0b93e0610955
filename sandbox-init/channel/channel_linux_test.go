package channel

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fakePorts lays out a sysfs-like ports directory and a dev directory
// with regular files standing in for the port devices.
func fakePorts(t *testing.T, ports map[string]string) (portsDir, devDir string) {
	t.Helper()
	portsDir, devDir = t.TempDir(), t.TempDir()
	for port, name := range ports {
		if err := os.Mkdir(filepath.Join(portsDir, port), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(portsDir, port, "name"), []byte(name+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(devDir, port), []byte(port), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return portsDir, devDir
}

func TestOpenFindsPortByName(t *testing.T) {
	portsDir, devDir := fakePorts(t, map[string]string{"vport1p1": "fs.0", "vport1p2": "control", "vport2p1": "disk"})
	f, err := open(portsDir, devDir, "control", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 16)
	n, _ := f.Read(b)
	if got := string(b[:n]); got != "vport1p2" {
		t.Errorf("opened %q, want vport1p2", got)
	}
}

func TestOpenWaitsForThePort(t *testing.T) {
	portsDir, devDir := fakePorts(t, nil)
	go func() {
		time.Sleep(50 * time.Millisecond)
		os.WriteFile(filepath.Join(devDir, "vport3p1"), nil, 0o644)
		os.Mkdir(filepath.Join(portsDir, "vport3p1"), 0o755)
		os.WriteFile(filepath.Join(portsDir, "vport3p1", "name"), []byte("control\n"), 0o644)
	}()
	f, err := open(portsDir, devDir, "control", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestOpenTimesOut(t *testing.T) {
	portsDir, devDir := fakePorts(t, map[string]string{"vport1p1": "other"})
	begin := time.Now()
	_, err := open(portsDir, devDir, "control", 100*time.Millisecond)
	if !errors.Is(err, errNoPort) {
		t.Errorf("error = %v, want errNoPort", err)
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("gave up after %v", d)
	}
}

func TestOpenWithoutPortsDir(t *testing.T) {
	_, err := open(filepath.Join(t.TempDir(), "missing"), t.TempDir(), "control", 10*time.Millisecond)
	if !errors.Is(err, errNoPort) {
		t.Errorf("error = %v, want errNoPort", err)
	}
}
