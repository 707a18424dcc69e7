// Package message turns a Chronow topic stream entry into its canonical
// document for the tenant's messages collection, keeping whatever is wrong
// with the entry visible instead of dropping it.
package message

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"

	"github.com/chronow/persister/internal/bsonjson"
	"github.com/chronow/persister/internal/keyspace"
)

// MaxDocBytes is the largest document written. MongoDB's limit is 16 MiB; the
// margin leaves room for the insert command around it.
const MaxDocBytes = 16*1024*1024 - 16*1024

// ErrTooLarge is returned when an entry's document would exceed MaxDocBytes.
var ErrTooLarge = errors.New("document exceeds the 16 MiB BSON limit")

// Defect names one thing wrong with an entry. Defects are stored in the
// document's _system.defects and counted; the entry is still stored.
type Defect string

// The defects a topic entry can have.
const (
	DefectPayloadMissing   Defect = "payload_missing"
	DefectPayloadNotJSON   Defect = "payload_not_json"
	DefectKeysEscaped      Defect = "payload_keys_escaped"
	DefectHeadersMissing   Defect = "headers_missing"
	DefectHeadersNotJSON   Defect = "headers_not_json"
	DefectHeadersNotObject Defect = "headers_not_object"
	DefectSizeInvalid      Defect = "size_invalid"
	DefectSizeMismatch     Defect = "size_mismatch"
	DefectHashMissing      Defect = "hash_missing"
	DefectHashMismatch     Defect = "hash_mismatch"
	DefectPublishedAtBad   Defect = "published_at_invalid"
	DefectFieldNotString   Defect = "field_not_string"
)

// Doc is one encoded document ready for an insert.
type Doc struct {
	// ID is the document's deterministic _id.
	ID string
	// Raw is the BSON document.
	Raw []byte
	// Defects lists what was wrong with the entry, if anything.
	Defects []Defect
}

// Identity returns the deterministic _id of the document for an entry of one
// stream: namespace and entry id never contain ':' and stand first and last,
// so the topic in the middle may contain ':' without ambiguity. The tenant is
// not part of it: each tenant has its own database.
func Identity(namespace, name, entryID string) string {
	return namespace + ":" + name + ":" + entryID
}

// IDTime returns the millisecond time part of a stream entry id.
func IDTime(id string) (time.Time, error) {
	msPart, _, _ := strings.Cut(id, "-")
	ms, err := strconv.ParseInt(msPart, 10, 64)
	if err != nil || ms < 0 {
		return time.Time{}, fmt.Errorf("stream id %q: not ms-seq", id)
	}
	return time.UnixMilli(ms).UTC(), nil
}

// Fields gives access to an entry's field values as Redis returned them.
type Fields map[string]any

// Get returns a field as a string and whether it was present as a string.
func (f Fields) Get(name string) (string, bool, bool) {
	v, ok := f[name]
	if !ok {
		return "", false, false
	}
	s, isString := v.(string)
	return s, true, isString
}

// topicFieldNames are the fields Chronow writes on a topic entry.
var topicFieldNames = [...]string{"payload", "headers", "hash", "size", "publishedAt"}

// topicFieldIndex returns the index of name in topicFieldNames, or -1.
func topicFieldIndex(name string) int {
	for i, n := range topicFieldNames {
		if n == name {
			return i
		}
	}
	return -1
}

// Builder encodes documents; it is not safe for concurrent use but may be
// reused to avoid allocations (it keeps its work buffer between documents).
type Builder struct {
	buf []byte
}

// Work buffer sizes: the first document of a Builder starts with
// initialBuf, and a buffer grown beyond maxKeptBuf by a big document is not
// kept for the next one.
const (
	initialBuf = 4 << 10
	maxKeptBuf = 64 << 10
)

// Topic builds the messages document for a topic entry. It fails only when
// the document cannot be stored at all (ErrTooLarge, or an invalid id).
func (b *Builder) Topic(key keyspace.Key, id string, values Fields, now time.Time) (Doc, error) {
	seen, err := IDTime(id)
	if err != nil {
		return Doc{}, err
	}
	var defects []Defect
	var raw map[string]string // fields kept verbatim because of a defect
	keepRaw := func(name, text string) {
		if raw == nil {
			raw = map[string]string{}
		}
		raw[name] = text
	}
	// One pass over the fields: Chronow's five, and the rest kept as extras.
	var (
		known [len(topicFieldNames)]struct {
			v  any
			ok bool
		}
		extra []string
	)
	for name, v := range values {
		if i := topicFieldIndex(name); i >= 0 {
			known[i].v, known[i].ok = v, true
		} else {
			extra = append(extra, name)
		}
	}
	field := func(name string) (string, bool) {
		f := known[topicFieldIndex(name)]
		if !f.ok {
			return "", false
		}
		s, isString := f.v.(string)
		if !isString {
			defects = append(defects, DefectFieldNotString)
			s = fmt.Sprint(f.v)
		}
		return s, true
	}

	docID := Identity(key.Namespace, key.Name, id)
	if b.buf == nil {
		b.buf = make([]byte, 0, initialBuf)
	}
	idx, dst := bsoncore.AppendDocumentStart(b.buf[:0])
	dst = bsoncore.AppendStringElement(dst, "_id", docID)
	dst = bsoncore.AppendStringElement(dst, "topic", key.Name)
	dst = bsoncore.AppendStringElement(dst, "msgId", id)
	dst = bsoncore.AppendStringElement(dst, "tenantId", key.Tenant)
	dst = bsoncore.AppendStringElement(dst, "namespace", key.Namespace)

	// headers
	if h, ok := field("headers"); !ok {
		defects = append(defects, DefectHeadersMissing)
		dst = appendEmptyDoc(dst, "headers")
	} else {
		var d Defect
		dst, d = AppendHeaders(dst, "headers", h)
		if d != "" {
			defects = append(defects, d)
			keepRaw("headers", h)
		}
	}

	// payload
	payload, hasPayload := field("payload")
	// The payload's bytes for the transcoder and the hash, which only read
	// them: the string's own memory, not a copy (a 1 KB allocation per
	// entry saved).
	var pb []byte
	if !hasPayload {
		defects = append(defects, DefectPayloadMissing)
		dst = bsoncore.AppendNullElement(dst, "payload")
	} else {
		pb = unsafe.Slice(unsafe.StringData(payload), len(payload))
		var ds []Defect
		dst, ds = appendPayload(dst, "payload", payload, pb)
		if len(ds) > 0 {
			defects = append(defects, ds...)
			keepRaw("payload", payload)
		}
	}
	dst = bsoncore.AppendDateTimeElement(dst, "firstSeenAt", seen.UnixMilli())
	dst = bsoncore.AppendInt64Element(dst, "size", int64(len(payload)))

	if s, ok := field("size"); ok {
		n, err := strconv.ParseInt(s, 10, 64)
		switch {
		case err != nil:
			defects = append(defects, DefectSizeInvalid)
			keepRaw("size", s)
		case hasPayload && n != int64(len(payload)):
			defects = append(defects, DefectSizeMismatch)
			keepRaw("size", s)
		}
	} else {
		defects = append(defects, DefectSizeInvalid)
	}
	if h, ok := field("hash"); !ok {
		defects = append(defects, DefectHashMissing)
	} else {
		if hasPayload && !hashMatches(h, pb) {
			defects = append(defects, DefectHashMismatch)
		}
		dst = bsoncore.AppendStringElement(dst, "hash", h)
	}
	if p, ok := field("publishedAt"); ok {
		if t, err := time.Parse(time.RFC3339Nano, p); err == nil {
			dst = bsoncore.AppendDateTimeElement(dst, "publishedAt", t.UnixMilli())
		} else {
			defects = append(defects, DefectPublishedAtBad)
			keepRaw("publishedAt", p)
		}
	} else {
		defects = append(defects, DefectPublishedAtBad)
	}

	// Fields Chronow does not write today are kept, never dropped.
	if len(extra) > 0 {
		sort.Strings(extra)
		eidx, d := bsoncore.AppendDocumentElementStart(dst, "extraFields")
		for _, name := range extra {
			d = bsoncore.AppendStringElement(d, escapeFieldName(name), fmt.Sprint(values[name]))
		}
		dst, _ = bsoncore.AppendDocumentEnd(d, eidx)
	}

	dst = AppendSystem(dst, now, defects, raw)
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	b.buf = dst
	if cap(dst) > maxKeptBuf {
		b.buf = nil
	}
	if len(dst) > MaxDocBytes {
		return Doc{ID: docID, Defects: defects}, fmt.Errorf("entry %s: %d bytes: %w", id, len(dst), ErrTooLarge)
	}
	out := make([]byte, len(dst))
	copy(out, dst)
	return Doc{ID: docID, Raw: out, Defects: defects}, nil
}

// AppendPayload appends a JSON text as a BSON value. Text that is not JSON
// is stored as a string, with the defect saying so.
func AppendPayload(dst []byte, name, text string) ([]byte, []Defect) {
	return appendPayload(dst, name, text, []byte(text))
}

// appendPayload is AppendPayload with the text's bytes already at hand.
func appendPayload(dst []byte, name, text string, src []byte) ([]byte, []Defect) {
	out, res, err := bsonjson.AppendElement(dst, name, src)
	if err != nil {
		return bsoncore.AppendStringElement(dst, name, text), []Defect{DefectPayloadNotJSON}
	}
	if res.EscapedKeys {
		return out, []Defect{DefectKeysEscaped}
	}
	return out, nil
}

// AppendHeaders appends a headers JSON text, which must be an object. Other
// text becomes an empty object and a defect; the caller keeps the raw text.
func AppendHeaders(dst []byte, name, text string) ([]byte, Defect) {
	t := strings.TrimLeft(text, " \t\r\n")
	if !strings.HasPrefix(t, "{") {
		if bsonjson.Valid([]byte(text)) {
			return appendEmptyDoc(dst, name), DefectHeadersNotObject
		}
		return appendEmptyDoc(dst, name), DefectHeadersNotJSON
	}
	out, _, err := bsonjson.AppendElement(dst, name, []byte(text))
	if err != nil {
		return appendEmptyDoc(dst, name), DefectHeadersNotJSON
	}
	return out, ""
}

// AppendSystem appends the _system sub-document: createdAt, and when the
// entry had defects, their names and the raw text of the affected fields.
func AppendSystem(dst []byte, now time.Time, defects []Defect, raw map[string]string) []byte {
	sidx, dst := bsoncore.AppendDocumentElementStart(dst, "_system")
	dst = bsoncore.AppendDateTimeElement(dst, "createdAt", now.UnixMilli())
	if len(defects) > 0 {
		aidx, d := bsoncore.AppendArrayElementStart(dst, "defects")
		for i, df := range uniq(defects) {
			d = bsoncore.AppendStringElement(d, strconv.Itoa(i), string(df))
		}
		dst, _ = bsoncore.AppendArrayEnd(d, aidx)
	}
	if len(raw) > 0 {
		names := make([]string, 0, len(raw))
		for n := range raw {
			names = append(names, n)
		}
		sort.Strings(names)
		ridx, d := bsoncore.AppendDocumentElementStart(dst, "raw")
		for _, n := range names {
			d = bsoncore.AppendStringElement(d, escapeFieldName(n), raw[n])
		}
		dst, _ = bsoncore.AppendDocumentEnd(d, ridx)
	}
	dst, _ = bsoncore.AppendDocumentEnd(dst, sidx)
	return dst
}

func uniq(ds []Defect) []Defect {
	out := ds[:0:0]
	seen := map[Defect]bool{}
	for _, d := range ds {
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}

func appendEmptyDoc(dst []byte, name string) []byte {
	return bsoncore.AppendDocumentElement(dst, name, []byte{5, 0, 0, 0, 0})
}

// hashMatches reports whether h is the SHA-256 of payload in hex, in either
// letter case, without allocating.
func hashMatches(h string, payload []byte) bool {
	if len(h) != sha256.Size*2 {
		return false
	}
	sum := sha256.Sum256(payload)
	for i, b := range sum {
		hi, ok1 := unhex(h[2*i])
		lo, ok2 := unhex(h[2*i+1])
		if !ok1 || !ok2 || hi<<4|lo != b {
			return false
		}
	}
	return true
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// escapeFieldName makes a Redis field name safe as a BSON key, the same way
// bsonjson escapes payload keys.
func escapeFieldName(n string) string {
	if n == "" {
		return "\u2400empty"
	}
	if strings.HasPrefix(n, "$") {
		n = "\uFF04" + n[1:]
	}
	n = strings.ReplaceAll(n, ".", "\uFF0E")
	return strings.ReplaceAll(n, "\x00", "\u2400")
}
