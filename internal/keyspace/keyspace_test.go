package keyspace

import (
	"errors"
	"fmt"
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
		var wantErr error
		if tt.wantErr {
			wantErr = ErrNotChronowKey
		}
		checkParse(t, fmt.Sprintf("Parse(%q, %q)", tt.prefix, tt.key), tt.key, got, err, tt.want, wantErr)
	}
}

// checkParse checks one parse of key (described by call): the wanted error,
// or else the wanted Key, which must print as key again.
func checkParse(t *testing.T, call, key string, got Key, err error, want Key, wantErr error) {
	t.Helper()
	if wantErr != nil {
		if !errors.Is(err, wantErr) {
			t.Errorf("%s error = %v, want %v", call, err, wantErr)
		}
		return
	}
	if err != nil || got != want {
		t.Errorf("%s = %+v, %v; want %+v", call, got, err, want)
	}
	if got.String() != key {
		t.Errorf("String() = %q, want %q", got.String(), key)
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

func TestLayoutParse(t *testing.T) {
	conf := map[string]bool{"acme": true, "default": true}
	auto := Layout{Prefix: "cw:", Form: FormAuto, Tenants: conf}
	tests := []struct {
		l       Layout
		key     string
		want    Key
		wantErr error
	}{
		// Both forms Chronow writes, out of the box.
		{auto, "cw:acme:default:topic:orders", Key{"cw:", "acme", "default", KindTopic, "orders"}, nil},
		{auto, "cw:cw:acme:default:topic:orders", Key{"cw:cw:", "acme", "default", KindTopic, "orders"}, nil},
		{auto, "cw:cw:acme:default:sm:flags:x", Key{"cw:cw:", "acme", "default", KindSharedMemory, "flags:x"}, nil},
		{auto, "cw:cw:acme:default:retry:orders:s1", Key{"cw:cw:", "acme", "default", KindRetry, "orders:s1"}, nil},
		// A tenant named like the prefix is a tenant, in both forms.
		{auto, "cw:cw:default:topic:orders", Key{"cw:", "cw", "default", KindTopic, "orders"}, nil},
		{auto, "cw:cw:cw:default:topic:orders", Key{"cw:cw:", "cw", "default", KindTopic, "orders"}, nil},
		// Parses under both: the configured tenant decides...
		{auto, "cw:cw:acme:topic:topic:orders", Key{"cw:cw:", "acme", "topic", KindTopic, "orders"}, nil},
		{Layout{Prefix: "cw:", Form: FormAuto, Tenants: map[string]bool{"cw": true}}, "cw:cw:acme:topic:topic:orders",
			Key{"cw:", "cw", "acme", KindTopic, "topic:orders"}, nil},
		// ...and when it cannot, the key is ambiguous.
		{Layout{Prefix: "cw:", Form: FormAuto}, "cw:cw:acme:topic:topic:orders", Key{}, ErrAmbiguous},
		{Layout{Prefix: "cw:", Form: FormAuto, Tenants: map[string]bool{"cw": true, "acme": true}}, "cw:cw:acme:topic:topic:orders", Key{}, ErrAmbiguous},
		// Pinned forms.
		{Layout{Prefix: "cw:", Form: FormSingle}, "cw:cw:acme:default:topic:orders", Key{"cw:", "cw", "acme", "default", "topic:orders"}, nil},
		{Layout{Prefix: "cw:", Form: FormDoubled}, "cw:acme:default:topic:orders", Key{}, ErrNotChronowKey},
		{Layout{Prefix: "cw:", Form: FormDoubled}, "cw:cw:acme:default:topic:orders", Key{"cw:cw:", "acme", "default", KindTopic, "orders"}, nil},
		// No prefix: one form only.
		{Layout{Form: FormAuto}, "acme:default:topic:orders", Key{"", "acme", "default", KindTopic, "orders"}, nil},
		// Not Chronow's.
		{auto, "other:acme:default:topic:orders", Key{}, ErrNotChronowKey},
		{auto, "cw:acme", Key{}, ErrNotChronowKey},
	}
	for _, tt := range tests {
		got, err := tt.l.Parse(tt.key)
		checkParse(t, fmt.Sprintf("%+v.Parse(%q)", tt.l, tt.key), tt.key, got, err, tt.want, tt.wantErr)
	}
}

func TestLayoutPatternAndKey(t *testing.T) {
	auto := Layout{Prefix: "cw:", Form: FormAuto}
	if got, want := auto.Pattern(KindTopic), "cw:*:*:topic:*"; got != want {
		t.Errorf("auto pattern %q, want %q", got, want)
	}
	d := Layout{Prefix: "cw:", Form: FormDoubled}
	if got, want := d.Pattern(KindDLQ), "cw:cw:*:*:dlq:*"; got != want {
		t.Errorf("doubled pattern %q, want %q", got, want)
	}
	if got, want := d.Key("t", "ns", KindTopic, "o").String(), "cw:cw:t:ns:topic:o"; got != want {
		t.Errorf("doubled key %q, want %q", got, want)
	}
	if got, want := auto.Key("t", "ns", KindTopic, "o").String(), "cw:t:ns:topic:o"; got != want {
		t.Errorf("auto key %q, want %q", got, want)
	}
	for _, s := range []string{"auto", "single", "doubled"} {
		if f, err := ParseForm(s); err != nil || string(f) != s {
			t.Errorf("ParseForm(%q) = %q, %v", s, f, err)
		}
	}
	if _, err := ParseForm("twice"); err == nil {
		t.Error("ParseForm(twice): no error")
	}
}
