// Package keyspace parses and builds the Redis key names Chronow writes.
//
// Every Chronow key is {prefix}{tenantId}:{namespace}:{kind}:{name}. The tenant
// and namespace never contain ':' and are parsed from the left; the name is the
// rest and may itself contain ':'.
//
// The prefix is often written twice: an app that passes redis.keyPrefix to
// Chronow (its quick start does, and so does configFromEnv) gets it applied
// by ioredis and again by Chronow's key builder, so its keys are
// {prefix}{prefix}{tenantId}:...; an app that leaves it unset gets Chronow's
// default once. A Layout accepts either form, or pins one.
package keyspace

import (
	"errors"
	"fmt"
	"strings"
)

// Kind is the kind segment of a Chronow key.
type Kind string

// The kinds the persister knows about.
const (
	KindTopic        Kind = "topic"
	KindDLQ          Kind = "dlq"
	KindSharedMemory Kind = "sm"
	KindRetry        Kind = "retry"
	KindSub          Kind = "sub"
)

// ErrNotChronowKey is returned by Parse for keys that are not Chronow keys.
var ErrNotChronowKey = errors.New("not a chronow key")

// Key is a parsed Chronow key.
type Key struct {
	Prefix    string
	Tenant    string
	Namespace string
	Kind      Kind
	Name      string
}

// String returns the full Redis key.
func (k Key) String() string {
	return k.Prefix + k.Tenant + ":" + k.Namespace + ":" + string(k.Kind) + ":" + k.Name
}

// Parse splits a Redis key with the given prefix into its parts. It returns an
// error wrapping ErrNotChronowKey when the key does not have the prefix or does
// not have four non-empty parts.
func Parse(prefix, key string) (Key, error) {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok {
		return Key{}, fmt.Errorf("key %q lacks prefix %q: %w", key, prefix, ErrNotChronowKey)
	}
	tenant, rest, ok1 := strings.Cut(rest, ":")
	ns, rest, ok2 := strings.Cut(rest, ":")
	kind, name, ok3 := strings.Cut(rest, ":")
	if !ok1 || !ok2 || !ok3 || tenant == "" || ns == "" || kind == "" || name == "" {
		return Key{}, fmt.Errorf("key %q is not {prefix}{tenant}:{namespace}:{kind}:{name}: %w", key, ErrNotChronowKey)
	}
	return Key{Prefix: prefix, Tenant: tenant, Namespace: ns, Kind: Kind(kind), Name: name}, nil
}

// Form says which forms of the prefix a Layout accepts.
type Form string

// The forms of the prefix.
const (
	// FormAuto accepts both forms; a key that parses under both with a
	// known kind is ambiguous and accepted under neither.
	FormAuto Form = "auto"
	// FormSingle accepts {prefix}{tenant}:... only.
	FormSingle Form = "single"
	// FormDoubled accepts {prefix}{prefix}{tenant}:... only.
	FormDoubled Form = "doubled"
)

// ParseForm parses a Form's name.
func ParseForm(s string) (Form, error) {
	switch f := Form(s); f {
	case FormAuto, FormSingle, FormDoubled:
		return f, nil
	}
	return "", fmt.Errorf("unknown prefix form %q (want auto, single or doubled)", s)
}

// ErrAmbiguous is returned by Layout.Parse in FormAuto for a key that is a
// Chronow key under the single and under the doubled prefix alike, and
// whose two tenants are both configured or both not. Only a tenant named
// like the prefix can cause it: cw:cw:acme:topic:topic:orders is tenant
// "cw", namespace "acme", topic "topic:orders" under the single prefix, and
// tenant "acme", namespace "topic", topic "orders" under the doubled one.
var ErrAmbiguous = errors.New("chronow key under both the single and the doubled prefix")

// Layout is where the persister looks for Chronow's keys: the prefix the
// app configured (REDIS_KEY_PREFIX) and the forms of it to accept.
type Layout struct {
	Prefix string
	Form   Form
	// Tenants, when set, are the configured tenants: a key that parses
	// under both forms is taken in the form whose tenant is configured,
	// when only one is.
	Tenants map[string]bool
}

// Known reports whether k is a kind Chronow writes.
func (k Kind) Known() bool {
	switch k {
	case KindTopic, KindDLQ, KindSharedMemory, KindRetry, KindSub:
		return true
	}
	return false
}

// Parse splits a Redis key into its parts under the layout. In FormAuto a
// key must parse, with a known kind, under exactly one of the two forms
// (ErrAmbiguous when under both); the Key's Prefix is the prefix as the key
// holds it (once or twice), so Key.String gives the key back.
func (l Layout) Parse(key string) (Key, error) {
	if l.Prefix == "" || l.Form == FormSingle || l.Form == "" {
		return Parse(l.Prefix, key)
	}
	doubled := l.Prefix + l.Prefix
	if l.Form == FormDoubled {
		return Parse(doubled, key)
	}
	s, errS := Parse(l.Prefix, key)
	d, errD := Parse(doubled, key)
	okS, okD := errS == nil && s.Kind.Known(), errD == nil && d.Kind.Known()
	switch {
	case okS && okD && l.Tenants[s.Tenant] != l.Tenants[d.Tenant]:
		if l.Tenants[s.Tenant] {
			return s, nil
		}
		return d, nil
	case okS && okD:
		return Key{}, fmt.Errorf("key %q: tenant %q or %q: %w", key, s.Tenant, d.Tenant, ErrAmbiguous)
	case okD:
		return d, nil
	case okS, errS == nil:
		return s, nil
	}
	return Key{}, errS
}

// Pattern returns the SCAN MATCH pattern for all keys of one kind the
// layout accepts (in FormAuto the single-prefix pattern, which matches the
// doubled keys too).
func (l Layout) Pattern(kind Kind) string {
	if l.Form == FormDoubled {
		return Pattern(l.Prefix+l.Prefix, kind)
	}
	return Pattern(l.Prefix, kind)
}

// Key returns the key of a tenant's namespace, kind and name as an app of
// this layout writes it: with the doubled prefix when the layout is
// FormDoubled, else with the single one. Tools that write (requeue) take
// the prefix from the key they read instead.
func (l Layout) Key(tenant, namespace string, kind Kind, name string) Key {
	p := l.Prefix
	if l.Form == FormDoubled {
		p += p
	}
	return Key{Prefix: p, Tenant: tenant, Namespace: namespace, Kind: kind, Name: name}
}

// Pattern returns the SCAN MATCH pattern for all keys of one kind under prefix.
// Glob metacharacters in the prefix are escaped.
func Pattern(prefix string, kind Kind) string {
	return EscapeGlob(prefix) + "*:*:" + string(kind) + ":*"
}

// SubConfigKey returns the hash key holding a subscription's config for a topic
// stream key.
func SubConfigKey(topicKey, subscription string) string {
	return topicKey + ":sub:" + subscription + ":config"
}

// EscapeGlob escapes the characters Redis glob patterns treat specially.
func EscapeGlob(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
