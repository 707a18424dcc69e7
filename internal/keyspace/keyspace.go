// Package keyspace parses and builds the Redis key names Chronow writes.
//
// Every Chronow key is {prefix}{tenantId}:{namespace}:{kind}:{name}. The tenant
// and namespace never contain ':' and are parsed from the left; the name is the
// rest and may itself contain ':'.
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
