package replay

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/chronow/persister/internal/batch"
)

func TestParseBound(t *testing.T) {
	tm := time.Date(2026, 11, 25, 19, 0, 0, 123_000_000, time.UTC)
	ms := uint64(tm.UnixMilli())
	tests := []struct {
		in      string
		end     bool
		want    ID
		wantErr bool
	}{
		{"", false, MinID, false},
		{"", true, MaxID, false},
		{"-", false, MinID, false},
		{"+", true, MaxID, false},
		{"1732561200123-7", false, ID{1732561200123, 7}, false},
		{"1732561200123-7", true, ID{1732561200123, 7}, false},
		{"1732561200123", false, ID{1732561200123, 0}, false},
		{"1732561200123", true, ID{1732561200123, math.MaxUint64}, false},
		{"2026-11-25T19:00:00.123Z", false, ID{ms, 0}, false},
		{"2026-11-25T19:00:00.123Z", true, ID{ms, math.MaxUint64}, false},
		{"2026-11-25T20:00:00.123+01:00", false, ID{ms, 0}, false},
		{"yesterday", false, ID{}, true},
		{"12-x", false, ID{}, true},
		{"-5", false, ID{}, true},
		{"1-2-3", false, ID{}, true},
		{"1969-12-31T23:59:59Z", false, ID{}, true},
		{"2026-11-25", false, ID{}, true},
	}
	for _, tt := range tests {
		got, err := ParseBound(tt.in, tt.end)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseBound(%q, %v): err %v, wantErr %v", tt.in, tt.end, err, tt.wantErr)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrBadBound) {
				t.Errorf("ParseBound(%q): error %v does not wrap ErrBadBound", tt.in, err)
			}
			continue
		}
		if got != tt.want {
			t.Errorf("ParseBound(%q, %v) = %v, want %v", tt.in, tt.end, got, tt.want)
		}
	}
}

func TestIDOrderAndNext(t *testing.T) {
	if got := (ID{5, 1}).Next(); got != (ID{5, 2}) {
		t.Errorf("Next of 5-1 = %v", got)
	}
	if got := (ID{5, math.MaxUint64}).Next(); got != (ID{6, 0}) {
		t.Errorf("Next of 5-max = %v", got)
	}
	if got := MaxID.Next(); got != MaxID {
		t.Errorf("Next of max = %v", got)
	}
	if !(ID{5, 9}).Less(ID{6, 0}) || (ID{6, 0}).Less(ID{5, 9}) || (ID{5, 1}).Less(ID{5, 1}) {
		t.Error("Less is wrong")
	}
	r := Range{From: ID{10, 0}, To: ID{20, math.MaxUint64}}
	for id, want := range map[ID]bool{{9, 99}: false, {10, 0}: true, {20, 5}: true, {21, 0}: false} {
		if r.Contains(id) != want {
			t.Errorf("%v contains %v: got %v", r, id, !want)
		}
	}
	if All.start() != "-" || All.end() != "+" || All.Bounded() || !r.Bounded() {
		t.Error("All must be - + and unbounded")
	}
}

func TestChunksSplitByCollectionAndBytes(t *testing.T) {
	doc := func(coll string, size int) batch.Item { return batch.Item{Collection: coll, Doc: make([]byte, size)} }
	items := []batch.Item{doc("a", 40), doc("b", 10), doc("a", 40), doc("a", 40), doc("b", 10)}
	got := chunks(items, 100)
	var shape []string
	for _, c := range got {
		s := c[0].Collection
		for range c[1:] {
			s += "+"
		}
		shape = append(shape, s)
	}
	if want := "a+ a b+"; strings.Join(shape, " ") != want {
		t.Errorf("chunks: got %q, want %q", strings.Join(shape, " "), want)
	}
	// A single document larger than the limit still gets its own chunk.
	if got := chunks([]batch.Item{doc("a", 500)}, 100); len(got) != 1 || len(got[0]) != 1 {
		t.Errorf("oversized doc: got %d chunks", len(got))
	}
}

func TestMeterLines(t *testing.T) {
	var buf bytes.Buffer
	m := newMeter(&buf, false, "replay", 1000)
	m.done = 250
	line := m.line(5 * time.Second)
	for _, want := range []string{"250/~1000 entries (25%)", "50/s", "ETA 15s"} {
		if !strings.Contains(line, want) {
			t.Errorf("line %q lacks %q", line, want)
		}
	}
	m.stream = "cw:a:b:topic:c"
	m.finish()
	if !strings.HasSuffix(buf.String(), "stream cw:a:b:topic:c\n") || strings.Contains(buf.String(), "\r") {
		t.Errorf("plain output: %q", buf.String())
	}
	buf.Reset()
	tty := newMeter(&buf, true, "verify", 0)
	tty.done = 3
	tty.finish()
	if !strings.HasPrefix(buf.String(), "\r\033[K") || !strings.HasSuffix(buf.String(), "\n") {
		t.Errorf("tty output: %q", buf.String())
	}
}
