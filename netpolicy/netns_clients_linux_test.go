package netpolicy_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/torkbot/sandbox/internal/testutil"
	"github.com/torkbot/sandbox/netpolicy"
)

// clientTools are the binaries TestNetnsClients needs beyond tools.
var clientTools = map[string]string{"ssh": "openssh-client", "ssh-keygen": "openssh-client", "sshd": "openssh-server", "openssl": "openssl"}

// Ports of the origins TestNetnsClients adds on originA (allowed) and, for
// sshd, originB (denied).
const (
	sshdPort     = 2222
	tlsPort      = 443
	redisPort    = 6379
	memcachePort = 11211
	tlsName      = "tls.example.test"
)

// TestNetnsClients runs real protocol clients (OpenSSH, OpenSSL, nc speaking
// RESP and the memcache text protocol, dig) in the guest namespace against
// real or protocol-speaking origins, through a Stack.
func TestNetnsClients(t *testing.T) {
	if os.Getenv(envInNetns) == "" {
		reexecInNetns(t, clientTools)
		return
	}
	o := &clientOrigins{dir: t.TempDir()}
	h := newHarness(t, o.start)

	t.Run("ssh banner and key exchange", func(t *testing.T) {
		out, _ := h.guestErr("ssh", "-v", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
			"-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", "-p", fmt.Sprint(sshdPort), "nobody@198.51.100.10", "exit")
		// Login fails (no credentials); the banner and the host key prove
		// the client reached the real sshd through the stack.
		for _, want := range []string{"Remote protocol version 2.0, remote software version OpenSSH", "Server host key: ssh-ed25519 " + o.hostKeyFP, "SSH2_MSG_NEWKEYS received"} {
			if !strings.Contains(out, want) {
				t.Fatalf("ssh -v output lacks %q:\n%s", want, out)
			}
		}
		// sshd logs on accept, before its banner; the log's pipe may lag.
		for deadline := time.Now().Add(2 * time.Second); o.sshdConnections(originA) == 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		if n := o.sshdConnections(originA); n == 0 {
			t.Fatalf("sshd logged no connection on %s:\n%s", originA, o.sshdLog())
		}
	})
	t.Run("ssh denied", func(t *testing.T) {
		out, err := h.guestErr("ssh", "-v", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
			"-p", fmt.Sprint(sshdPort), "nobody@203.0.113.10", "exit")
		if err == nil || strings.Contains(out, "Remote protocol version") || !strings.Contains(out, "Connection refused") {
			t.Fatalf("ssh to denied origin: %v\n%s", err, out)
		}
		// The allowed subtest's connection was logged, so the log flows.
		if n := o.sshdConnections(originB); n != 0 {
			t.Fatalf("sshd logged %d connections on denied %s:\n%s", n, originB, o.sshdLog())
		}
		h.policy.wantFlow(t, func(f netpolicy.Flow) bool { return f.Dst == netip.AddrPortFrom(originB, sshdPort) })
	})
	t.Run("openssl s_client passthrough", func(t *testing.T) {
		// -ign_eof: read until the origin closes, after its greeting.
		out := h.guest(t, "openssl", "s_client", "-brief", "-ign_eof", "-connect", fmt.Sprintf("198.51.100.10:%d", tlsPort),
			"-servername", tlsName, "-verify_hostname", tlsName, "-CAfile", o.caFile, "-verify_return_error")
		for _, want := range []string{"Verification: OK", "Verified peername: " + tlsName, "hello over tls"} {
			if !strings.Contains(out, want) {
				t.Fatalf("s_client output lacks %q:\n%s", want, out)
			}
		}
		if sni, _ := o.tlsSNI.Load().(string); sni != tlsName {
			t.Fatalf("origin saw SNI %q", sni)
		}
	})
	t.Run("openssl s_client wrong name fails", func(t *testing.T) {
		// Raw passthrough: the guest verifies the origin's own certificate.
		out, err := h.guestErr("openssl", "s_client", "-brief", "-connect", fmt.Sprintf("198.51.100.10:%d", tlsPort),
			"-servername", "other.test", "-verify_hostname", "other.test", "-CAfile", o.caFile, "-verify_return_error")
		if err == nil || !strings.Contains(out, "hostname mismatch") {
			t.Fatalf("s_client with the wrong name: %v\n%s", err, out)
		}
	})
	t.Run("redis ping", func(t *testing.T) {
		if out := h.guestIn(t, "*1\r\n$4\r\nPING\r\n", "nc", "-N", "-w", "5", "198.51.100.10", fmt.Sprint(redisPort)); out != "+PONG" {
			t.Fatalf("redis = %q", out)
		}
	})
	t.Run("memcache version", func(t *testing.T) {
		if out := h.guestIn(t, "version\r\n", "nc", "-N", "-w", "5", "198.51.100.10", fmt.Sprint(memcachePort)); out != "VERSION 1.6.0-origin" {
			t.Fatalf("memcache = %q", out)
		}
	})
	t.Run("dns predicate udp only", func(t *testing.T) {
		udpOnly := func(f netpolicy.Flow) bool { return f.Transport == "udp" }
		h.policy.dnsWhen.Store(&udpOnly)
		defer h.policy.dnsWhen.Store(nil)
		before := h.policy.count()
		if out := h.guest(t, "dig", "@10.0.2.1", "+short", "+tries=1", "+time=3", "origin.example.test"); out != "198.51.100.10" {
			t.Fatalf("dig (udp) = %q", out)
		}
		if out := h.guest(t, "dig", "@10.0.2.1", "+tcp", "+tries=1", "+time=3", "origin.example.test"); !strings.Contains(out, "status: REFUSED") {
			t.Fatalf("dig +tcp = %q", out)
		}
		flows := h.policy.since(before)
		if len(flows) != 2 || !flows[0].DNS || flows[0].Transport != "udp" || !flows[1].DNS || flows[1].Transport != "tcp" {
			t.Fatalf("want one UDP then one TCP DNS query, got %+v", flows)
		}
	})

	h.closeNoLeaks(t)
}

// clientOrigins are TestNetnsClients's origins: a real sshd, a TLS server
// with a CA made here, and RESP and memcache line servers.
type clientOrigins struct {
	dir       string
	caFile    string
	hostKeyFP string
	tlsSNI    atomic.Value

	mu  sync.Mutex
	log bytes.Buffer // sshd's log
}

func (o *clientOrigins) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.log.Write(b)
}

func (o *clientOrigins) sshdLog() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.log.String()
}

// sshdConnections counts the connections sshd logged as accepted on a.
func (o *clientOrigins) sshdConnections(a netip.Addr) int {
	n := 0
	for _, line := range strings.Split(o.sshdLog(), "\n") {
		if strings.HasPrefix(line, "Connection from ") && strings.Contains(line, fmt.Sprintf(" on %s port %d ", a, sshdPort)) {
			n++
		}
	}
	return n
}

func (o *clientOrigins) start(t *testing.T, _ *harness) {
	o.startSSHD(t)
	o.startTLS(t)
	serveLines(t, netip.AddrPortFrom(originA, redisPort), respReply)
	serveLines(t, netip.AddrPortFrom(originA, memcachePort), func(_ *bufio.Reader, line string) string {
		if line == "version" {
			return "VERSION 1.6.0-origin\r\n"
		}
		return "ERROR\r\n"
	})
}

// startSSHD runs the system's sshd with a throwaway host key on originA
// (allowed) and originB (denied), logging every accepted connection.
func (o *clientOrigins) startSSHD(t *testing.T) {
	key := filepath.Join(o.dir, "ssh_host_ed25519_key")
	testutil.Run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key)
	fp, err := exec.Command("ssh-keygen", "-l", "-f", key+".pub").Output()
	if err != nil {
		t.Fatal(err)
	}
	o.hostKeyFP = strings.Fields(string(fp))[1] // "256 SHA256:… comment (ED25519)"
	// sshd refuses to start without its privilege separation directory,
	// which the package's service would create.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(o.dir, "sshd_config")
	conf := fmt.Sprintf("ListenAddress %s:%d\nListenAddress %s:%d\nHostKey %s\nPidFile none\nUsePAM no\nLogLevel VERBOSE\nAuthorizedKeysFile none\n",
		originA, sshdPort, originB, sshdPort, key)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", originsNetns, sshd, "-D", "-e", "-f", cfg)
	cmd.Stdout, cmd.Stderr = o, o
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(o.sshdLog(), "Server listening on") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("sshd did not start:\n%s", o.sshdLog())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startTLS makes a CA and a certificate for tlsName, and serves TLS on
// originA: a greeting after the handshake, recording the client's SNI.
func (o *clientOrigins) startTLS(t *testing.T) {
	ca := newTestCA(t, "netpolicy test CA")
	o.caFile = filepath.Join(o.dir, "ca.pem")
	if err := os.WriteFile(o.caFile, ca.pem, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{ca.leaf(t, tlsName)},
		GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			o.tlsSNI.Store(hi.ServerName)
			return nil, nil
		},
	}
	l := tls.NewListener(listenOrigin(t, "tcp", netip.AddrPortFrom(originA, tlsPort)), cfg)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if c.(*tls.Conn).Handshake() == nil {
					io.WriteString(c, "hello over tls\n")
				}
			}()
		}
	}()
}

// serveLines serves a line protocol on addr: reply gets each line without
// its CRLF and the reader (for protocols with payload lines after it).
func serveLines(t *testing.T, addr netip.AddrPort, reply func(r *bufio.Reader, line string) string) {
	l := listenOrigin(t, "tcp", addr)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := io.WriteString(c, reply(r, strings.TrimRight(line, "\r\n"))); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// respReply answers a RESP command, an array of bulk strings or an inline
// command: PING with +PONG, anything else with an error.
func respReply(r *bufio.Reader, line string) string {
	args := strings.Fields(line)
	if strings.HasPrefix(line, "*") {
		var n int
		if _, err := fmt.Sscanf(line, "*%d", &n); err != nil || n < 1 || n > 16 {
			return "-ERR protocol error\r\n"
		}
		args = args[:0]
		for range n {
			var size int
			hdr, err := r.ReadString('\n')
			if err != nil {
				return ""
			}
			if _, err := fmt.Sscanf(hdr, "$%d", &size); err != nil || size < 0 || size > 1<<10 {
				return "-ERR protocol error\r\n"
			}
			b := make([]byte, size+2)
			if _, err := io.ReadFull(r, b); err != nil {
				return ""
			}
			args = append(args, string(b[:size]))
		}
	}
	if len(args) == 1 && strings.EqualFold(args[0], "PING") {
		return "+PONG\r\n"
	}
	return "-ERR unknown command\r\n"
}
