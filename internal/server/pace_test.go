package server

import (
	"net/http/httptest"
	"testing"
	"time"
)

// TestPacer checks the pacer's arithmetic on a fake clock: while an
// upload is in flight, downloads together get the configured rate (after
// a burst); without one, or with rate 0, they are not held back.
func TestPacer(t *testing.T) {
	for _, tt := range []struct {
		name   string
		rate   float64
		active bool
		send   int
		want   time.Duration // total sleep
	}{
		{"no upload", 1 << 20, false, 8 << 20, 0},
		{"rate 0", 0, true, 8 << 20, 0},
		{"burst only", 1 << 20, true, burst, 0},
		{"8 MiB at 1 MiB/s", 1 << 20, true, 8 << 20, 8*time.Second - time.Duration(float64(burst)/(1<<20)*float64(time.Second))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock := time.Unix(0, 0)
			var slept time.Duration
			p := &pacer{rate: tt.rate, active: func() bool { return tt.active },
				now:   func() time.Time { return clock },
				sleep: func(d time.Duration) { slept += d; clock = clock.Add(d) }}
			w := &sendWriter{ResponseWriter: httptest.NewRecorder(), p: p}
			n, err := w.Write(make([]byte, tt.send))
			if err != nil || n != tt.send {
				t.Fatalf("wrote %d, %v", n, err)
			}
			if d := slept - tt.want; d < -time.Millisecond || d > time.Millisecond {
				t.Errorf("slept %s, want %s", slept, tt.want)
			}
		})
	}
}
