package config

import (
	"strings"
	"testing"
)

func TestMemorySettings(t *testing.T) {
	c, err := load(t, map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Persister.MaxInflightBytes != 8<<20 || c.Persister.MemoryLimit != 0 {
		t.Errorf("defaults = %d / %d, want 8 MiB / 0 (auto)", c.Persister.MaxInflightBytes, c.Persister.MemoryLimit)
	}
	checkEnvCases(t, []envCase{
		{map[string]string{"PERSISTER_MAX_INFLIGHT_BYTES": "1048576", "PERSISTER_MEMORY_LIMIT": "-1"}, ""},
		{map[string]string{"PERSISTER_MEMORY_LIMIT": "25165824"}, ""}, // 8 MiB + 16 MiB
		{map[string]string{"PERSISTER_MAX_INFLIGHT_BYTES": "0"}, "PERSISTER_MAX_INFLIGHT_BYTES"},
		{map[string]string{"PERSISTER_MAX_INFLIGHT_BYTES": "-5"}, "PERSISTER_MAX_INFLIGHT_BYTES"},
		{map[string]string{"PERSISTER_MAX_INFLIGHT_BYTES": "8MiB"}, "PERSISTER_MAX_INFLIGHT_BYTES"},
		{map[string]string{"PERSISTER_MEMORY_LIMIT": "-2"}, "PERSISTER_MEMORY_LIMIT"},
		{map[string]string{"PERSISTER_MEMORY_LIMIT": "25165823"}, "PERSISTER_MEMORY_LIMIT"},
	})
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
