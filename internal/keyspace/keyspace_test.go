package keyspace

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		prefix, key string
		want        Key
		wantErr     bool
	}{
		{"cw:", "cw:tenant-a:payments:topic:orders", Key{"cw:", "tenant-a", "payments", KindTopic, "orders"}, false},
		{"cw:", "cw:default:default:dlq:orders", Key{"cw:", "default", "default", KindDLQ, "orders"}, false},
		{"cw:", "cw:t:ns:retry:orders:sub1", Key{"cw:", "t", "ns", KindRetry, "orders:sub1"}, false},
		{"", "t:ns:topic:a:b:c", Key{"", "t", "ns", KindTopic, "a:b:c"}, false},
		{"cw:", "other:t:ns:topic:x", Key{}, true},
		{"cw:", "cw:t:ns:topic:", Key{}, true},
		{"cw:", "cw:t:ns:topic", Key{}, true},
		{"cw:", "cw::ns:topic:x", Key{}, true},
	}
	for _, tt := range tests {
		got, err := Parse(tt.prefix, tt.key)
		if tt.wantErr {
			if !errors.Is(err, ErrNotChronowKey) {
				t.Errorf("Parse(%q, %q) error = %v, want ErrNotChronowKey", tt.prefix, tt.key, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Parse(%q, %q) = %+v, %v; want %+v", tt.prefix, tt.key, got, err, tt.want)
		}
		if got.String() != tt.key {
			t.Errorf("String() = %q, want %q", got.String(), tt.key)
		}
	}
}

func TestPattern(t *testing.T) {
	if got, want := Pattern("cw:", KindTopic), "cw:*:*:topic:*"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := Pattern("a*[b", KindDLQ), `a\*\[b*:*:dlq:*`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
