package message

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

func TestHashMatches(t *testing.T) {
	payload := []byte(`{"a":1}`)
	sum := sha256.Sum256(payload)
	lower := hex.EncodeToString(sum[:])
	tests := []struct {
		name string
		h    string
		want bool
	}{
		{"lower case", lower, true},
		{"upper case", strings.ToUpper(lower), true},
		{"mixed case", strings.ToUpper(lower[:10]) + lower[10:], true},
		{"other payload", sha("x"), false},
		{"one digit off", lower[:63] + string("0123456789abcdef"[(strings.IndexByte("0123456789abcdef", lower[63])+1)%16]), false},
		{"too short", lower[:62], false},
		{"too long", lower + "0", false},
		{"not hex", "zz" + lower[2:], false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		if got := hashMatches(tt.h, payload); got != tt.want {
			t.Errorf("%s: hashMatches(%q) = %v, want %v", tt.name, tt.h, got, tt.want)
		}
	}
}

func TestBuilderReuseKeepsDocumentsApart(t *testing.T) {
	var b Builder
	d1, err := b.Topic(key, "1-1", chronowFields(`{"n":1}`), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keep := string(d1.Raw)
	if _, err := b.Topic(key, "1-2", chronowFields(`{"n":2,"more":"text"}`), time.Now()); err != nil {
		t.Fatal(err)
	}
	if string(d1.Raw) != keep {
		t.Fatal("building a second document changed the first one's bytes")
	}
	// A big document does not leave its big buffer in the builder.
	big := `{"s":"` + strings.Repeat("x", 2*maxKeptBuf) + `"}`
	if _, err := b.Topic(key, "1-3", chronowFields(big), time.Now()); err != nil {
		t.Fatal(err)
	}
	if cap(b.buf) > maxKeptBuf {
		t.Errorf("builder kept a %d-byte buffer, want at most %d", cap(b.buf), maxKeptBuf)
	}
}
