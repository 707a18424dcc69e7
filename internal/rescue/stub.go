package rescue

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/message"
)

// Defects the persister records on the documents it makes instead of the
// usual one.
const (
	// DefectPayloadTooLarge: the entry's document would exceed the BSON
	// limit; the payload is in the raw_entries bucket.
	DefectPayloadTooLarge message.Defect = "payload_too_large"
	// DefectFieldsTooLarge: other fields than the payload were too large
	// and are in the raw_entries bucket.
	DefectFieldsTooLarge message.Defect = "fields_too_large"
	// DefectRefused: the server refused the document as built; it is in
	// the raw_entries bucket, as BSON.
	DefectRefused message.Defect = "refused_by_server"
)

// stubBudget is the most field bytes kept inside a persister-made document;
// larger fields go to the bucket, largest first.
const stubBudget = 4 << 20

// suffixRefused ends the _id of the dead letter written when even the stub
// of a refused document is refused. Chronow's dead letters have _id
// "<ns>:<topic>:<ms>-<seq>"; a suffix after the stream id can never be one
// of those (internal/dlq's poison dead letters end with "#poison").
const suffixRefused = "#refused"

// RefusedID returns the _id of the dead letter the persister writes when
// even the stub of a refused document is refused.
func RefusedID(key keyspace.Key, entryID string) string {
	return message.Identity(key.Namespace, key.Name, entryID) + "#" + string(key.Kind) + suffixRefused
}

// Collection returns where documents of entries of kind go.
func Collection(kind keyspace.Kind) string {
	if kind == keyspace.KindDLQ {
		return config.CollDeadLetters
	}
	return config.CollMessages
}

// entryDoc is a document the persister makes from a raw stream entry when
// the usual document cannot be stored: a stub where the usual document
// would be, or a dead letter of its own.
type entryDoc struct {
	coll      string
	id        string
	key       keyspace.Key
	entryID   string
	values    message.Fields
	offloaded map[string]BlobRef
	defects   []message.Defect
	errText   string
	// own is set for the dead letters the persister makes itself (poison):
	// reason, failedAt (now) and deliveries are its own, not the entry's.
	own        bool
	reason     string
	deliveries int64
	now        time.Time
}

// chooseOffload returns the fields to store in the bucket, largest first,
// until what stays fits in stubBudget.
func chooseOffload(values message.Fields) []string {
	type f struct {
		name string
		size int
	}
	var fs []f
	total := 0
	for name, v := range values {
		n := len(fmt.Sprint(v)) + len(name)
		fs = append(fs, f{name, n})
		total += n
	}
	sort.Slice(fs, func(i, j int) bool {
		if fs[i].size != fs[j].size {
			return fs[i].size > fs[j].size
		}
		return fs[i].name < fs[j].name
	})
	var out []string
	for _, x := range fs {
		if total <= stubBudget {
			break
		}
		out = append(out, x.name)
		total -= x.size
	}
	return out
}

// build encodes the document:
//
//	_id, topic, msgId, tenantId, namespace   as in the usual document
//	dlqId                (entries of dead-letter streams)
//	reason               (dead letters)
//	headers, payload     parsed when kept, else {} and null
//	firstSeenAt, size    (messages) from the entry id and the payload length
//	failedAt, deliveries (dead letters)
//	_system              createdAt, defects, error, source {stream, kind, id},
//	                     raw (the other fields, verbatim),
//	                     offloaded {field: {bucket, fileId, length, sha256}}
func (e entryDoc) build() ([]byte, error) {
	idTime, err := message.IDTime(e.entryID)
	if err != nil {
		return nil, err
	}
	b := &docBuilder{e: e, defects: append([]message.Defect(nil), e.defects...), used: map[string]bool{}}
	idx, dst := bsoncore.AppendDocumentStart(nil)
	b.dst = dst
	b.appendIdentity()
	b.appendParsed("headers", message.AppendHeaders, message.AppendEmptyDoc)
	b.appendParsed("payload", message.AppendPayload, bsoncore.AppendNullElement)
	if e.coll == config.CollMessages {
		b.appendSeen(idTime)
	} else {
		b.appendFailure(idTime)
	}
	dst = e.appendSystem(b.dst, b.defects, b.rest())
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	if len(dst) > message.MaxDocBytes {
		return nil, fmt.Errorf("entry %s: document of %d bytes: %w", e.entryID, len(dst), message.ErrTooLarge)
	}
	return dst, nil
}

// docBuilder holds an entryDoc's document while build appends its fields,
// the defects found so far and the fields already used (the others go to
// _system.raw).
type docBuilder struct {
	e       entryDoc
	dst     []byte
	defects []message.Defect
	used    map[string]bool
}

// get returns a field that is kept in the document (not offloaded), as text.
func (b *docBuilder) get(name string) (string, bool) {
	if _, off := b.e.offloaded[name]; off {
		return "", false
	}
	v, ok := b.e.values[name]
	if !ok {
		return "", false
	}
	if s, isString := v.(string); isString {
		return s, true
	}
	return fmt.Sprint(v), true
}

// appendField appends the entry's field from as the string elem, or null
// when the field is missing or offloaded.
func (b *docBuilder) appendField(elem, from string) {
	if s, ok := b.get(from); ok {
		b.dst = bsoncore.AppendStringElement(b.dst, elem, s)
		b.used[from] = true
	} else {
		b.dst = bsoncore.AppendNullElement(b.dst, elem)
	}
}

// appendIdentity appends _id, topic, msgId, tenantId, namespace, dlqId and
// reason.
func (b *docBuilder) appendIdentity() {
	e := b.e
	b.dst = bsoncore.AppendStringElement(b.dst, "_id", e.id)
	b.dst = bsoncore.AppendStringElement(b.dst, "topic", e.key.Name)
	if e.key.Kind != keyspace.KindDLQ {
		b.dst = bsoncore.AppendStringElement(b.dst, "msgId", e.entryID)
	} else {
		b.appendField("msgId", "originalMsgId")
	}
	b.dst = bsoncore.AppendStringElement(b.dst, "tenantId", e.key.Tenant)
	b.dst = bsoncore.AppendStringElement(b.dst, "namespace", e.key.Namespace)
	if e.key.Kind == keyspace.KindDLQ {
		b.dst = bsoncore.AppendStringElement(b.dst, "dlqId", e.entryID)
	}
	if e.coll == config.CollDeadLetters {
		if e.own {
			b.dst = bsoncore.AppendStringElement(b.dst, "reason", e.reason)
		} else {
			b.appendField("reason", "reason")
		}
	}
}

// appendParsed appends the field name parsed by appendFn (headers or
// payload); a field that does not parse stays in raw with its defects, a
// missing one is appended by missing.
func (b *docBuilder) appendParsed(name string,
	appendFn func(dst []byte, name, text string) ([]byte, []message.Defect),
	missing func(dst []byte, name string) []byte) {
	v, ok := b.get(name)
	if !ok {
		b.dst = missing(b.dst, name)
		return
	}
	var ds []message.Defect
	b.dst, ds = appendFn(b.dst, name, v)
	if len(ds) > 0 {
		b.defects = append(b.defects, ds...)
	} else {
		b.used[name] = true
	}
}

// appendSeen appends a message's firstSeenAt (from the entry id) and size
// (the payload's length).
func (b *docBuilder) appendSeen(idTime time.Time) {
	b.dst = bsoncore.AppendDateTimeElement(b.dst, "firstSeenAt", idTime.UnixMilli())
	size := int64(0)
	if v, ok := b.e.values["payload"]; ok {
		size = int64(len(fmt.Sprint(v)))
	}
	b.dst = bsoncore.AppendInt64Element(b.dst, "size", size)
}

// appendFailure appends a dead letter's failedAt and deliveries: the
// persister's own (poison), or the entry's fields when they parse (else the entry id's
// time and null).
func (b *docBuilder) appendFailure(idTime time.Time) {
	failedAt := idTime
	var deliveries int64 = -1
	if b.e.own {
		failedAt, deliveries = b.e.now, b.e.deliveries
	} else {
		if s, ok := b.get("failedAt"); ok {
			if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
				failedAt = t
			}
		}
		if s, ok := b.get("deliveries"); ok {
			if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= 0 {
				deliveries = n
			}
		}
	}
	b.dst = bsoncore.AppendDateTimeElement(b.dst, "failedAt", failedAt.UnixMilli())
	if deliveries >= 0 {
		b.dst = bsoncore.AppendInt64Element(b.dst, "deliveries", deliveries)
	} else {
		b.dst = bsoncore.AppendNullElement(b.dst, "deliveries")
	}
}

// rest returns the kept fields no element took, verbatim.
func (b *docBuilder) rest() map[string]string {
	raw := map[string]string{}
	for name := range b.e.values {
		if s, ok := b.get(name); ok && !b.used[name] {
			raw[name] = s
		}
	}
	return raw
}

// appendSystem is message.AppendSystem plus error, source and offloaded.
func (e entryDoc) appendSystem(dst []byte, defects []message.Defect, raw map[string]string) []byte {
	sidx, dst := bsoncore.AppendDocumentElementStart(dst, "_system")
	dst = bsoncore.AppendDateTimeElement(dst, "createdAt", e.now.UnixMilli())
	if len(defects) > 0 {
		aidx, d := bsoncore.AppendArrayElementStart(dst, "defects")
		seen := map[message.Defect]bool{}
		i := 0
		for _, df := range defects {
			if seen[df] {
				continue
			}
			seen[df] = true
			d = bsoncore.AppendStringElement(d, strconv.Itoa(i), string(df))
			i++
		}
		dst, _ = bsoncore.AppendArrayEnd(d, aidx)
	}
	if e.errText != "" {
		dst = bsoncore.AppendStringElement(dst, "error", safeString(e.errText))
	}
	cidx, d := bsoncore.AppendDocumentElementStart(dst, "source")
	d = bsoncore.AppendStringElement(d, "stream", e.key.String())
	d = bsoncore.AppendStringElement(d, "kind", string(e.key.Kind))
	d = bsoncore.AppendStringElement(d, "id", e.entryID)
	dst, _ = bsoncore.AppendDocumentEnd(d, cidx)
	if len(raw) > 0 {
		dst = appendStringMap(dst, "raw", raw)
	}
	if len(e.offloaded) > 0 {
		names := make([]string, 0, len(e.offloaded))
		for n := range e.offloaded {
			names = append(names, n)
		}
		sort.Strings(names)
		oidx, d := bsoncore.AppendDocumentElementStart(dst, "offloaded")
		for _, n := range names {
			d = appendRef(d, message.EscapeFieldName(n), e.offloaded[n])
		}
		dst, _ = bsoncore.AppendDocumentEnd(d, oidx)
	}
	dst, _ = bsoncore.AppendDocumentEnd(dst, sidx)
	return dst
}

func appendStringMap(dst []byte, name string, m map[string]string) []byte {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	ridx, d := bsoncore.AppendDocumentElementStart(dst, name)
	for _, n := range names {
		d = bsoncore.AppendStringElement(d, message.EscapeFieldName(n), m[n])
	}
	dst, _ = bsoncore.AppendDocumentEnd(d, ridx)
	return dst
}

// refusedStub is what replaces a document the server refused for good: the
// small identity fields of the refused document, a null payload, and a
// reference to the refused document, stored as BSON in the bucket.
func refusedStub(doc bsoncore.Document, ref BlobRef, errText string, now time.Time) []byte {
	idx, dst := bsoncore.AppendDocumentStart(nil)
	for _, name := range []string{"_id", "topic", "msgId", "tenantId", "namespace", "dlqId", "reason", "firstSeenAt", "size", "failedAt", "deliveries"} {
		v, err := doc.LookupErr(name)
		if err != nil || len(v.Data) > 4096 {
			continue
		}
		dst = bsoncore.AppendValueElement(dst, name, v)
	}
	dst = message.AppendEmptyDoc(dst, "headers")
	dst = bsoncore.AppendNullElement(dst, "payload")
	dst = appendRefusedSystem(dst, errText, ref, now, nil)
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst
}

// refusedDeadLetter is the last resort when even the stub was refused: a
// dead letter holding only the tenant, where the entry came from, the error
// and the reference to the refused document.
func refusedDeadLetter(key keyspace.Key, entryID string, ref BlobRef, errText string, now time.Time) []byte {
	idx, dst := bsoncore.AppendDocumentStart(nil)
	dst = bsoncore.AppendStringElement(dst, "_id", RefusedID(key, entryID))
	dst = bsoncore.AppendStringElement(dst, "tenantId", key.Tenant)
	dst = bsoncore.AppendStringElement(dst, "reason", "persister: refused by the server: "+safeString(errText))
	dst = bsoncore.AppendDateTimeElement(dst, "failedAt", now.UnixMilli())
	dst = appendRefusedSystem(dst, errText, ref, now, func(d []byte) []byte {
		cidx, d := bsoncore.AppendDocumentElementStart(d, "source")
		d = bsoncore.AppendStringElement(d, "stream", safeString(key.String()))
		d = bsoncore.AppendStringElement(d, "kind", string(key.Kind))
		d = bsoncore.AppendStringElement(d, "id", entryID)
		d, _ = bsoncore.AppendDocumentEnd(d, cidx)
		return d
	})
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	return dst
}

// appendRefusedSystem appends the _system of a document made for a refused
// one: createdAt, the refused defect, the error, what source appends (when
// not nil) and the reference to the refused document in the bucket.
func appendRefusedSystem(dst []byte, errText string, ref BlobRef, now time.Time, source func(dst []byte) []byte) []byte {
	sidx, dst := bsoncore.AppendDocumentElementStart(dst, "_system")
	dst = bsoncore.AppendDateTimeElement(dst, "createdAt", now.UnixMilli())
	aidx, d := bsoncore.AppendArrayElementStart(dst, "defects")
	d = bsoncore.AppendStringElement(d, "0", string(DefectRefused))
	dst, _ = bsoncore.AppendArrayEnd(d, aidx)
	dst = bsoncore.AppendStringElement(dst, "error", safeString(errText))
	if source != nil {
		dst = source(dst)
	}
	oidx, d := bsoncore.AppendDocumentElementStart(dst, "offloaded")
	d = appendRef(d, "document", ref)
	dst, _ = bsoncore.AppendDocumentEnd(d, oidx)
	dst, _ = bsoncore.AppendDocumentEnd(dst, sidx)
	return dst
}

// safeString makes text the persister writes (error messages) valid UTF-8
// and bounded.
func safeString(s string) string {
	const maxLen = 2048
	if len(s) > maxLen {
		s = s[:maxLen] + "…"
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
