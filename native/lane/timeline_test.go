package lane

import (
	"testing"
	"time"

	"github.com/torkbot/sandbox/control"
)

func TestTimeline(t *testing.T) {
	l := &Lane{Guest: control.GuestInfo{Boot: []control.BootEvent{
		{Name: "init", At: 812300 * time.Microsecond},
		{Name: "root", At: 1030 * time.Millisecond},
		{Name: "ready", At: 1100 * time.Millisecond},
	}}}
	if got, want := l.Timeline(), "kernel 0 ms → init 812 ms → root 1030 ms → ready 1100 ms"; got != want {
		t.Errorf("Timeline() = %q, want %q", got, want)
	}
}
