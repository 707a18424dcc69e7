package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// The memory and metrics settings: their defaults, and which values each
// variable accepts.
func TestMemoryAndMetricsSettings(t *testing.T) {
	c, err := load(t, map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Persister.MaxInflightBytes != 8<<20 || c.Persister.MemoryLimit != 0 {
		t.Errorf("defaults = %d / %d, want 8 MiB / 0 (auto)", c.Persister.MaxInflightBytes, c.Persister.MemoryLimit)
	}
	if c.Persister.MetricsInterval != 10*time.Second || c.Persister.MetricsTopStreams != 0 {
		t.Errorf("defaults = %v / %d, want 10s / 0", c.Persister.MetricsInterval, c.Persister.MetricsTopStreams)
	}
	for _, tc := range []struct {
		env     map[string]string
		wantErr string // the variable the error must name; "" = valid
	}{
		{map[string]string{"PERSISTER_MAX_INFLIGHT_BYTES": "1048576", "PERSISTER_MEMORY_LIMIT": "-1"}, ""},
		{map[string]string{"PERSISTER_MEMORY_LIMIT": "25165824"}, ""}, // 8 MiB + 16 MiB
		{map[string]string{"PERSISTER_MAX_INFLIGHT_BYTES": "0"}, "PERSISTER_MAX_INFLIGHT_BYTES"},
		{map[string]string{"PERSISTER_MAX_INFLIGHT_BYTES": "-5"}, "PERSISTER_MAX_INFLIGHT_BYTES"},
		{map[string]string{"PERSISTER_MAX_INFLIGHT_BYTES": "8MiB"}, "PERSISTER_MAX_INFLIGHT_BYTES"},
		{map[string]string{"PERSISTER_MEMORY_LIMIT": "-2"}, "PERSISTER_MEMORY_LIMIT"},
		{map[string]string{"PERSISTER_MEMORY_LIMIT": "25165823"}, "PERSISTER_MEMORY_LIMIT"},
		{map[string]string{"PERSISTER_METRICS_INTERVAL": "1s", "PERSISTER_METRICS_TOP_STREAMS": "50"}, ""},
		{map[string]string{"PERSISTER_METRICS_TOP_STREAMS": "1000"}, ""},
		{map[string]string{"PERSISTER_METRICS_INTERVAL": "0s"}, "PERSISTER_METRICS_INTERVAL"},
		{map[string]string{"PERSISTER_METRICS_INTERVAL": "-5s"}, "PERSISTER_METRICS_INTERVAL"},
		{map[string]string{"PERSISTER_METRICS_TOP_STREAMS": "-1"}, "PERSISTER_METRICS_TOP_STREAMS"},
		{map[string]string{"PERSISTER_METRICS_TOP_STREAMS": "1001"}, "PERSISTER_METRICS_TOP_STREAMS"},
	} {
		_, err := load(t, tc.env)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%v: got %v, want valid", tc.env, err)
		case tc.wantErr != "" && (err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%v: got %v, want ErrInvalid naming %s", tc.env, err, tc.wantErr)
		}
	}
}

func TestSoftMemoryLimit(t *testing.T) {
	p := Persister{MaxInflightBytes: 8 << 20}
	if got, why := p.SoftMemoryLimit(""); got != 40<<20 || !strings.HasPrefix(why, "auto") {
		t.Errorf("auto: %d (%s), want 40 MiB", got, why)
	}
	if got, why := p.SoftMemoryLimit("200MiB"); got != 0 || !strings.Contains(why, "GOMEMLIMIT=200MiB") {
		t.Errorf("GOMEMLIMIT set: %d (%s), want 0 (the runtime's own)", got, why)
	}
	p.MemoryLimit = 100 << 20
	if got, _ := p.SoftMemoryLimit("200MiB"); got != 100<<20 {
		t.Errorf("explicit: %d, want 100 MiB (wins over GOMEMLIMIT)", got)
	}
	p.MemoryLimit = -1
	if got, _ := p.SoftMemoryLimit(""); got != 0 {
		t.Errorf("off: %d, want 0", got)
	}
}
