package consumer

import (
	"slices"
	"testing"
)

func TestSlot(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want int
	}{
		{"123456789", 0x31C3}, // the CRC-16/XMODEM check value
		{"", 0},
		{"foo", 12182},
		{"bar", 5061},
		{"{user1000}.following", Slot("user1000")},
		{"{user1000}.followers", Slot("user1000")},
		{"foo{}{bar}", Slot("foo{}{bar}")}, // empty tag: the whole key
		{"foo{{bar}}zap", Slot("{bar")},
		{"foo{bar}{zap}", Slot("bar")},
		{"a{b", Slot("a{b")},
		{"cw:{t1}:ns:topic:orders", Slot("t1")},
	} {
		if got := Slot(tc.key); got != tc.want {
			t.Errorf("Slot(%q) = %d, want %d", tc.key, got, tc.want)
		}
	}
	if Slot("foo{}{bar}") == Slot("bar") {
		t.Errorf("an empty first tag must not fall through to the second")
	}
}

func TestBySlot(t *testing.T) {
	keys := []string{"{a}1", "b", "{a}2", "c", "{b}x"}
	got := BySlot(keys)
	var flat []string
	for _, g := range got {
		s := Slot(g[0])
		for _, k := range g {
			if Slot(k) != s {
				t.Errorf("group %v mixes slots", g)
			}
		}
		flat = append(flat, g...)
	}
	if len(got) != 3 {
		t.Errorf("got %d groups %v, want 3 ({a}, b and {b}x share a slot, c)", len(got), got)
	}
	slices.Sort(flat)
	want := slices.Clone(keys)
	slices.Sort(want)
	if !slices.Equal(flat, want) {
		t.Errorf("groups hold %v, want every key once %v", flat, want)
	}
	for i := 1; i < len(got); i++ {
		if Slot(got[i-1][0]) >= Slot(got[i][0]) {
			t.Errorf("groups not in slot order: %v", got)
		}
	}
	if !slices.ContainsFunc(got, func(g []string) bool { return slices.Equal(g, []string{"{a}1", "{a}2"}) }) {
		t.Errorf("groups %v lack [{a}1 {a}2] in the given order", got)
	}
}
