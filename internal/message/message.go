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
	"unicode/utf8"
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

	// Text with no exact UTF-8 form (a lone UTF-16 surrogate escape as
	// JavaScript writes it, or bytes that are not UTF-8): stored with U+FFFD
	// in its place, the exact text in _system.raw.
	DefectPayloadUnicode Defect = "payload_unicode_replaced"
	DefectHeadersUnicode Defect = "headers_unicode_replaced"
	// Header names starting with '$' or holding '.' or NUL, escaped like
	// payload keys (DefectKeysEscaped).
	DefectHeadersKeysEscaped Defect = "headers_keys_escaped"

	// Retry entries (retryOf and attempt instead of hash, size, publishedAt).
	DefectRetryOfMissing Defect = "retry_of_missing"
	DefectRetryOfInvalid Defect = "retry_of_invalid"
	DefectAttemptMissing Defect = "attempt_missing"
	DefectAttemptInvalid Defect = "attempt_invalid"
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

// topicFieldNames are the fields Chronow writes on a topic entry: the five
// of a publish, then retryOf and attempt, which a retry entry (Chronow's
// nack with requeue) carries instead of hash, size and publishedAt.
var topicFieldNames = [...]string{"payload", "headers", "hash", "size", "publishedAt", "retryOf", "attempt"}

// Indexes into topicFieldNames.
const (
	fPayload = iota
	fHeaders
	fHash
	fSize
	fPublishedAt
	fRetryOf
	fAttempt
)

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

// Faults collects what is wrong with one entry: its defects, and the exact
// text of every field a defect concerns (stored in _system.raw).
type Faults struct {
	Defects []Defect
	Raw     map[string]string
}

// Add records a defect.
func (f *Faults) Add(d ...Defect) { f.Defects = append(f.Defects, d...) }

// Keep records the exact text of a field.
func (f *Faults) Keep(name, text string) {
	if f.Raw == nil {
		f.Raw = map[string]string{}
	}
	f.Raw[name] = text
}

// topicEntry is a topic entry's fields sorted into Chronow's and the rest.
type topicEntry struct {
	known [len(topicFieldNames)]struct {
		v  any
		ok bool
	}
	extra  []string
	values Fields
	faults *Faults
}

// field returns a known field as text and whether it is present; a value
// that is not a string is a defect and stored as its text.
func (e *topicEntry) field(i int) (string, bool) {
	f := e.known[i]
	if !f.ok {
		return "", false
	}
	s, isString := f.v.(string)
	if !isString {
		e.faults.Add(DefectFieldNotString)
		s = fmt.Sprint(f.v)
	}
	return s, true
}

// Topic builds the messages document for a topic entry, a published one or
// a retry. It fails only when the document cannot be stored at all
// (ErrTooLarge, or an invalid id).
func (b *Builder) Topic(key keyspace.Key, id string, values Fields, now time.Time) (Doc, error) {
	seen, err := IDTime(id)
	if err != nil {
		return Doc{}, err
	}
	var faults Faults
	e := topicEntry{values: values, faults: &faults}
	for name, v := range values { // one pass: Chronow's fields, and the rest kept as extras
		if i := topicFieldIndex(name); i >= 0 {
			e.known[i].v, e.known[i].ok = v, true
		} else {
			e.extra = append(e.extra, name)
		}
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
	dst = e.appendHeaders(dst)
	dst, payload, hasPayload := e.appendPayload(dst)
	dst = bsoncore.AppendDateTimeElement(dst, "firstSeenAt", seen.UnixMilli())
	dst = bsoncore.AppendInt64Element(dst, "size", int64(len(payload)))
	dst = e.appendIntegrity(dst, payload, hasPayload)
	dst = appendExtraFields(dst, values, e.extra)
	dst = AppendSystem(dst, now, faults.Defects, faults.Raw)
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	b.buf = dst
	if cap(dst) > maxKeptBuf {
		b.buf = nil
	}
	if len(dst) > MaxDocBytes {
		return Doc{ID: docID, Defects: faults.Defects}, fmt.Errorf("entry %s: %d bytes: %w", id, len(dst), ErrTooLarge)
	}
	out := make([]byte, len(dst))
	copy(out, dst)
	return Doc{ID: docID, Raw: out, Defects: faults.Defects}, nil
}

func (e *topicEntry) appendHeaders(dst []byte) []byte {
	h, ok := e.field(fHeaders)
	if !ok {
		e.faults.Add(DefectHeadersMissing)
		return AppendEmptyDoc(dst, "headers")
	}
	dst, ds := AppendHeaders(dst, "headers", h)
	if len(ds) > 0 {
		e.faults.Add(ds...)
		e.faults.Keep("headers", h)
	}
	return dst
}

// appendPayload appends the payload and returns its text.
func (e *topicEntry) appendPayload(dst []byte) ([]byte, string, bool) {
	payload, ok := e.field(fPayload)
	if !ok {
		e.faults.Add(DefectPayloadMissing)
		return bsoncore.AppendNullElement(dst, "payload"), "", false
	}
	// The transcoder reads the string's own bytes, not a copy (a 1 KB
	// allocation per entry saved).
	pb := unsafe.Slice(unsafe.StringData(payload), len(payload))
	dst, ds := appendPayload(dst, "payload", payload, pb)
	if len(ds) > 0 {
		e.faults.Add(ds...)
		e.faults.Keep("payload", payload)
	}
	return dst, payload, true
}

// appendIntegrity appends what Chronow wrote about the payload: hash and
// publishedAt of a published entry, retryOf and attempt of a retry entry
// (which has no hash, size or publishedAt: their absence is no defect
// there), checking each against the payload.
func (e *topicEntry) appendIntegrity(dst []byte, payload string, hasPayload bool) []byte {
	retry := e.known[fRetryOf].ok || e.known[fAttempt].ok
	if s, ok := e.field(fSize); ok {
		n, err := strconv.ParseInt(s, 10, 64)
		switch {
		case err != nil:
			e.faults.Add(DefectSizeInvalid)
			e.faults.Keep("size", s)
		case hasPayload && n != int64(len(payload)):
			e.faults.Add(DefectSizeMismatch)
			e.faults.Keep("size", s)
		}
	} else if !retry {
		e.faults.Add(DefectSizeInvalid)
	}
	if h, ok := e.field(fHash); ok {
		if hasPayload && !hashMatches(h, unsafe.Slice(unsafe.StringData(payload), len(payload))) {
			e.faults.Add(DefectHashMismatch)
		}
		dst = bsoncore.AppendStringElement(dst, "hash", h)
	} else if !retry {
		e.faults.Add(DefectHashMissing)
	}
	if p, ok := e.field(fPublishedAt); ok {
		if t, err := time.Parse(time.RFC3339Nano, p); err == nil {
			dst = bsoncore.AppendDateTimeElement(dst, "publishedAt", t.UnixMilli())
		} else {
			e.faults.Add(DefectPublishedAtBad)
			e.faults.Keep("publishedAt", p)
		}
	} else if !retry {
		e.faults.Add(DefectPublishedAtBad)
	}
	if !retry {
		return dst
	}
	if r, ok := e.field(fRetryOf); ok {
		if !IsStreamID(r) {
			e.faults.Add(DefectRetryOfInvalid)
		}
		dst = bsoncore.AppendStringElement(dst, "retryOf", r)
	} else {
		e.faults.Add(DefectRetryOfMissing)
		dst = bsoncore.AppendNullElement(dst, "retryOf")
	}
	if a, ok := e.field(fAttempt); !ok {
		e.faults.Add(DefectAttemptMissing)
		dst = bsoncore.AppendNullElement(dst, "attempt")
	} else if n, err := strconv.ParseInt(a, 10, 64); err != nil || n < 0 {
		e.faults.Add(DefectAttemptInvalid)
		e.faults.Keep("attempt", a)
		dst = bsoncore.AppendNullElement(dst, "attempt")
	} else {
		dst = bsoncore.AppendInt64Element(dst, "attempt", n)
	}
	return dst
}

// appendExtraFields keeps, as text, the fields Chronow does not write today
// (never dropped), under their escaped names.
func appendExtraFields(dst []byte, values Fields, extra []string) []byte {
	if len(extra) == 0 {
		return dst
	}
	sort.Strings(extra)
	eidx, d := bsoncore.AppendDocumentElementStart(dst, "extraFields")
	for _, name := range extra {
		d = bsoncore.AppendStringElement(d, EscapeFieldName(name), fmt.Sprint(values[name]))
	}
	dst, _ = bsoncore.AppendDocumentEnd(d, eidx)
	return dst
}

// AppendExtraFields appends, as text, every field of values that known does
// not list (sorted by name; nothing when there is none).
func AppendExtraFields(dst []byte, values Fields, known map[string]bool) []byte {
	var extra []string
	for name := range values {
		if !known[name] {
			extra = append(extra, name)
		}
	}
	return appendExtraFields(dst, values, extra)
}

// IsStreamID reports whether s is a complete stream id "ms-seq".
func IsStreamID(s string) bool {
	ms, seq, ok := strings.Cut(s, "-")
	return ok && isDigits(ms) && isDigits(seq)
}

func isDigits(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// AppendPayload appends a JSON text as a BSON value. Text that is not JSON
// is stored as a string, with the defect saying so; text with no exact
// UTF-8 form is stored with U+FFFD in its place and the defect saying so.
// Whenever it returns a defect, the caller keeps the raw text.
func AppendPayload(dst []byte, name, text string) ([]byte, []Defect) {
	return appendPayload(dst, name, text, []byte(text))
}

// appendPayload is AppendPayload with the text's bytes already at hand.
func appendPayload(dst []byte, name, text string, src []byte) ([]byte, []Defect) {
	out, res, err := bsonjson.AppendElement(dst, name, src)
	if err != nil {
		if !utf8.ValidString(text) {
			return bsoncore.AppendStringElement(dst, name, strings.ToValidUTF8(text, "\uFFFD")),
				[]Defect{DefectPayloadNotJSON, DefectPayloadUnicode}
		}
		return bsoncore.AppendStringElement(dst, name, text), []Defect{DefectPayloadNotJSON}
	}
	return out, transcodeDefects(res, DefectKeysEscaped, DefectPayloadUnicode)
}

// AppendHeaders appends a headers JSON text, which must be an object. Other
// text becomes an empty object and a defect. Header names are escaped like
// payload keys, and text with no exact UTF-8 form is replaced, each with its
// defect. Whenever it returns a defect, the caller keeps the raw text.
func AppendHeaders(dst []byte, name, text string) ([]byte, []Defect) {
	t := strings.TrimLeft(text, " \t\r\n")
	if !strings.HasPrefix(t, "{") {
		if bsonjson.Valid([]byte(text)) {
			return AppendEmptyDoc(dst, name), []Defect{DefectHeadersNotObject}
		}
		return AppendEmptyDoc(dst, name), []Defect{DefectHeadersNotJSON}
	}
	out, res, err := bsonjson.AppendElement(dst, name, []byte(text))
	if err != nil {
		return AppendEmptyDoc(dst, name), []Defect{DefectHeadersNotJSON}
	}
	return out, transcodeDefects(res, DefectHeadersKeysEscaped, DefectHeadersUnicode)
}

// transcodeDefects returns escaped if the transcoding escaped keys and
// replaced if it replaced text with no exact UTF-8 form.
func transcodeDefects(res bsonjson.Result, escaped, replaced Defect) []Defect {
	var ds []Defect
	if res.EscapedKeys {
		ds = append(ds, escaped)
	}
	if res.Replaced {
		ds = append(ds, replaced)
	}
	return ds
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
			d = AppendText(d, EscapeFieldName(n), raw[n])
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

// AppendEmptyDoc appends the empty document {} as the element name (the
// headers of an entry that has none).
func AppendEmptyDoc(dst []byte, name string) []byte {
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

// AppendText appends text exactly: as a string when it is UTF-8, else as
// binary data (subtype 0), since a BSON string must be UTF-8. Raw copies of
// fields use it, so that they are always the exact bytes Redis held.
func AppendText(dst []byte, name, text string) []byte {
	if utf8.ValidString(text) {
		return bsoncore.AppendStringElement(dst, name, text)
	}
	return bsoncore.AppendBinaryElement(dst, name, 0, []byte(text))
}

// EscapeFieldName makes a Redis field name safe as a BSON key the way
// bsonjson escapes payload keys ('$' → U+FF04, '.' → U+FF0E, NUL → U+2400).
// A name that is not UTF-8 is left as it is: a server that refuses it
// refuses the document, which is then rescued with its exact bytes.
func EscapeFieldName(n string) string {
	if n == "" {
		return "\u2400empty"
	}
	if strings.HasPrefix(n, "$") {
		n = "\uFF04" + n[1:]
	}
	n = strings.ReplaceAll(n, ".", "\uFF0E")
	return strings.ReplaceAll(n, "\x00", "\u2400")
}
