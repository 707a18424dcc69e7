package dlq

import (
	"errors"
	"testing"
)

func TestMemoBounded(t *testing.T) {
	m := NewMemo(2)
	m.Note("s", "1", errors.New("a"))
	m.Note("s", "2", errors.New("b"))
	m.Note("s", "1", errors.New("a2"))
	m.Note("s", "3", errors.New("c"))
	if _, ok := m.Last("s", "1"); ok {
		t.Error("oldest entry kept")
	}
	if got, _ := m.Last("s", "3"); got != "c" {
		t.Errorf("got %q", got)
	}
	var nilMemo *Memo
	nilMemo.Note("s", "1", errors.New("x"))
	if _, ok := nilMemo.Last("s", "1"); ok {
		t.Error("nil memo remembered")
	}
}
