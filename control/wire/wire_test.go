package wire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/torkbot/sandbox/control/wire"
)

func encode(t testing.TB, ms ...wire.Message) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, m := range ms {
		if err := wire.WriteMessage(&b, m); err != nil {
			t.Fatalf("WriteMessage(%#v): %v", m, err)
		}
	}
	return b.Bytes()
}

// frame builds a message by hand, bypassing WriteMessage's checks.
func frame(t wire.Type, payload string) []byte {
	b := make([]byte, wire.HeaderSize, wire.HeaderSize+len(payload))
	b[0] = byte(t)
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	return append(b, payload...)
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		m    wire.Message
		read func(io.Reader) (wire.Message, error)
	}{
		{"hello", &wire.Hello{Version: 1, Capabilities: []string{}}, wire.ReadHostMessage},
		{"exec", &wire.Exec{Command: "ls", Args: []string{"-l", ""}, Cwd: "/tmp", Env: map[string]string{"A": "b=c", "E": ""}}, wire.ReadHostMessage},
		{"shutdown", &wire.Shutdown{}, wire.ReadHostMessage},
		{"hello reply", &wire.HelloReply{Version: 1, Capabilities: []string{"exec"}, KernelRelease: "6.1.0", Boot: []wire.BootEvent{{Name: "init", SinceBootNs: 5}}}, wire.ReadGuestMessage},
		{"started", &wire.Started{Pid: 42}, wire.ReadGuestMessage},
		{"stdout", &wire.Stdout{Data: []byte("\x00\xffbinary")}, wire.ReadGuestMessage},
		{"stderr max chunk", &wire.Stderr{Data: bytes.Repeat([]byte("e"), wire.MaxChunkPayload)}, wire.ReadGuestMessage},
		{"exit", &wire.Exit{ExitCode: 255}, wire.ReadGuestMessage},
		{"shutdown reply", &wire.ShutdownReply{}, wire.ReadGuestMessage},
		{"error", &wire.Error{Message: "no"}, wire.ReadGuestMessage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bytes.NewReader(encode(t, tt.m, tt.m))
			for range 2 {
				got, err := tt.read(r)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, tt.m) {
					t.Errorf("read %#v, want %#v", got, tt.m)
				}
			}
			if _, err := tt.read(r); err != io.EOF {
				t.Errorf("read at the end = %v, want io.EOF", err)
			}
		})
	}
}

func TestReadMalformed(t *testing.T) {
	host, guest := wire.ReadHostMessage, wire.ReadGuestMessage
	tests := []struct {
		name  string
		read  func(io.Reader) (wire.Message, error)
		input []byte
	}{
		{"reserved type", host, frame(0, "{}")},
		{"unknown type", guest, frame(0x99, "{}")},
		{"guest message to the guest", host, frame(wire.TypeExit, `{"exitCode":0}`)},
		{"host message to the host", guest, frame(wire.TypeExec, `{"command":"x"}`)},
		{"oversized JSON", host, []byte{byte(wire.TypeExec), 0x00, 0x10, 0x00, 0x01}},
		{"oversized chunk", guest, []byte{byte(wire.TypeStdout), 0x00, 0x01, 0x00, 0x01}},
		{"length 4 GiB", guest, []byte{byte(wire.TypeError), 0xff, 0xff, 0xff, 0xff}},
		{"invalid JSON", host, frame(wire.TypeExec, `{"command":`)},
		{"JSON of the wrong shape", host, frame(wire.TypeExec, `["ls"]`)},
		{"empty command", host, frame(wire.TypeExec, `{"command":""}`)},
		{"NUL in command", host, frame(wire.TypeExec, `{"command":"a\u0000b"}`)},
		{"NUL in argument", host, frame(wire.TypeExec, `{"command":"a","args":["\u0000"]}`)},
		{"NUL in cwd", host, frame(wire.TypeExec, `{"command":"a","cwd":"/\u0000"}`)},
		{"= in env name", host, frame(wire.TypeExec, `{"command":"a","env":{"A=B":"c"}}`)},
		{"empty env name", host, frame(wire.TypeExec, `{"command":"a","env":{"":"c"}}`)},
		{"NUL in env value", host, frame(wire.TypeExec, `{"command":"a","env":{"A":"\u0000"}}`)},
		{"empty capability", host, frame(wire.TypeHello, `{"version":1,"capabilities":[""]}`)},
		{"long capability", guest, frame(wire.TypeHelloReply, `{"version":1,"capabilities":["`+strings.Repeat("c", 65)+`"]}`)},
		{"long kernel release", guest, frame(wire.TypeHelloReply, `{"version":1,"kernelRelease":"`+strings.Repeat("k", 257)+`"}`)},
		{"negative boot time", guest, frame(wire.TypeHelloReply, `{"version":1,"boot":[{"name":"x","sinceBootNs":-1}]}`)},
		{"unnamed boot event", guest, frame(wire.TypeHelloReply, `{"version":1,"boot":[{"sinceBootNs":1}]}`)},
		{"pid 0", guest, frame(wire.TypeStarted, `{"pid":0}`)},
		{"exit code 256", guest, frame(wire.TypeExit, `{"exitCode":256}`)},
		{"negative exit code", guest, frame(wire.TypeExit, `{"exitCode":-1}`)},
		{"huge exit code", guest, frame(wire.TypeExit, `{"exitCode":1e100}`)},
		{"empty chunk", guest, frame(wire.TypeStderr, "")},
		{"long error", guest, frame(wire.TypeError, `{"message":"`+strings.Repeat("e", wire.MaxErrorMessage+1)+`"}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := tt.read(bytes.NewReader(tt.input))
			if !errors.Is(err, wire.ErrMalformed) {
				t.Errorf("read = %#v, %v; want ErrMalformed", m, err)
			}
		})
	}
}

func TestReadTruncated(t *testing.T) {
	whole := encode(t, &wire.Exec{Command: "ls"})
	for n := 1; n < len(whole); n++ {
		if _, err := wire.ReadHostMessage(bytes.NewReader(whole[:n])); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("read of %d of %d bytes = %v, want io.ErrUnexpectedEOF", n, len(whole), err)
		}
	}
}

func TestReadIgnoresUnknownFields(t *testing.T) {
	m, err := wire.ReadGuestMessage(bytes.NewReader(frame(wire.TypeExit, `{"exitCode":3,"later":true}`)))
	if err != nil || m.(*wire.Exit).ExitCode != 3 {
		t.Errorf("read = %#v, %v", m, err)
	}
}

func TestWriteRefuses(t *testing.T) {
	for _, m := range []wire.Message{
		&wire.Stdout{Data: make([]byte, wire.MaxChunkPayload+1)},
		&wire.Stdout{},
		&wire.Exec{Command: "x", Args: []string{strings.Repeat("a", wire.MaxJSONPayload)}},
		&wire.Exec{},
		&wire.Exit{ExitCode: 300},
	} {
		var b bytes.Buffer
		if err := wire.WriteMessage(&b, m); err == nil || b.Len() != 0 {
			t.Errorf("WriteMessage(%T) = %v, wrote %d bytes", m, err, b.Len())
		}
	}
}

// fuzzRead checks that read never panics, never allocates beyond the
// limits, and that whatever it accepts survives a round trip.
func fuzzRead(t *testing.T, read func(io.Reader) (wire.Message, error), input []byte) {
	r := bytes.NewReader(input)
	for {
		m, err := read(r)
		if err != nil {
			return
		}
		again, err := read(bytes.NewReader(encode(t, m)))
		if err != nil {
			t.Fatalf("re-reading %#v: %v", m, err)
		}
		if !reflect.DeepEqual(again, m) {
			t.Fatalf("round trip changed %#v into %#v", m, again)
		}
	}
}

// FuzzReadHostMessage fuzzes the guest's decoding of what the host sends.
func FuzzReadHostMessage(f *testing.F) {
	f.Add(encode(f, &wire.Hello{Version: 1, Capabilities: []string{"x"}}))
	f.Add(encode(f, &wire.Exec{Command: "sh", Args: []string{"-c", "echo"}, Cwd: "/", Env: map[string]string{"A": "1"}}))
	f.Add(encode(f, &wire.Shutdown{}, &wire.Shutdown{}))
	f.Add(frame(wire.TypeExec, `{"command":"x","env":{"A":"1","A":"2"}}`))
	f.Add(frame(wire.TypeExec, `{"command":"\ud800"}`))
	f.Add([]byte{byte(wire.TypeExec), 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, input []byte) { fuzzRead(t, wire.ReadHostMessage, input) })
}

// FuzzReadGuestMessage fuzzes the host's decoding of what the (hostile)
// guest sends.
func FuzzReadGuestMessage(f *testing.F) {
	f.Add(encode(f, &wire.HelloReply{Version: 1, Capabilities: []string{"exec"}, KernelRelease: "6.1", Boot: []wire.BootEvent{{Name: "a", SinceBootNs: 1}}}))
	f.Add(encode(f, &wire.Started{Pid: 1}, &wire.Stdout{Data: []byte("o")}, &wire.Stderr{Data: []byte("e")}, &wire.Exit{ExitCode: 1}))
	f.Add(encode(f, &wire.ShutdownReply{}, &wire.Error{Message: "m"}))
	f.Add(frame(wire.TypeExit, `{"exitCode":1.5}`))
	f.Add([]byte{byte(wire.TypeStdout), 0x00, 0x01, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, input []byte) { fuzzRead(t, wire.ReadGuestMessage, input) })
}
