package dlq

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
	// DefectPoison: the entry was delivered more than
	// PERSISTER_MAX_DELIVERIES times without being stored.
	DefectPoison message.Defect = "max_deliveries_exceeded"
)

// stubBudget is the most field bytes kept inside a persister-made document;
// larger fields go to the bucket, largest first.
const stubBudget = 4 << 20

// Suffixes of the _id of dead letters the persister makes itself. Chronow's
// dead letters have _id "<ns>:<topic>:<ms>-<seq>"; a suffix after the
// stream id can never be one of those.
const (
	suffixPoison  = "#poison"
	suffixRefused = "#refused"
)

// PoisonID returns the _id of the dead letter the persister writes for an
// entry of the stream key that was delivered too often without being stored.
func PoisonID(key keyspace.Key, entryID string) string {
	return message.Identity(key.Namespace, key.Name, entryID) + "#" + string(key.Kind) + suffixPoison
}

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
	// poison is set for the persister's own dead letters.
	poison     bool
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
	defects := append([]message.Defect(nil), e.defects...)
	raw := map[string]string{}
	get := func(name string) (string, bool) {
		if _, off := e.offloaded[name]; off {
			return "", false
		}
		v, ok := e.values[name]
		if !ok {
			return "", false
		}
		if s, isString := v.(string); isString {
			return s, true
		}
		return fmt.Sprint(v), true
	}
	used := map[string]bool{}

	idx, dst := bsoncore.AppendDocumentStart(nil)
	dst = bsoncore.AppendStringElement(dst, "_id", e.id)
	dst = bsoncore.AppendStringElement(dst, "topic", e.key.Name)
	switch {
	case e.key.Kind != keyspace.KindDLQ:
		dst = bsoncore.AppendStringElement(dst, "msgId", e.entryID)
	default:
		if s, ok := get("originalMsgId"); ok {
			dst = bsoncore.AppendStringElement(dst, "msgId", s)
			used["originalMsgId"] = true
		} else {
			dst = bsoncore.AppendNullElement(dst, "msgId")
		}
	}
	dst = bsoncore.AppendStringElement(dst, "tenantId", e.key.Tenant)
	dst = bsoncore.AppendStringElement(dst, "namespace", e.key.Namespace)
	if e.key.Kind == keyspace.KindDLQ {
		dst = bsoncore.AppendStringElement(dst, "dlqId", e.entryID)
	}
	if e.coll == config.CollDeadLetters {
		switch {
		case e.poison:
			dst = bsoncore.AppendStringElement(dst, "reason", e.reason)
		default:
			if s, ok := get("reason"); ok {
				dst = bsoncore.AppendStringElement(dst, "reason", s)
				used["reason"] = true
			} else {
				dst = bsoncore.AppendNullElement(dst, "reason")
			}
		}
	}
	if h, ok := get("headers"); ok {
		var ds []message.Defect
		dst, ds = message.AppendHeaders(dst, "headers", h)
		if len(ds) > 0 {
			defects = append(defects, ds...)
		} else {
			used["headers"] = true
		}
	} else {
		dst = appendEmptyDoc(dst, "headers")
	}
	if p, ok := get("payload"); ok {
		var ds []message.Defect
		dst, ds = message.AppendPayload(dst, "payload", p)
		if len(ds) > 0 {
			defects = append(defects, ds...)
		} else {
			used["payload"] = true
		}
	} else {
		dst = bsoncore.AppendNullElement(dst, "payload")
	}
	if e.coll == config.CollMessages {
		dst = bsoncore.AppendDateTimeElement(dst, "firstSeenAt", idTime.UnixMilli())
		size := int64(0)
		if v, ok := e.values["payload"]; ok {
			size = int64(len(fmt.Sprint(v)))
		}
		dst = bsoncore.AppendInt64Element(dst, "size", size)
	} else {
		failedAt := idTime
		var deliveries int64 = -1
		if e.poison {
			failedAt, deliveries = e.now, e.deliveries
		} else {
			if s, ok := get("failedAt"); ok {
				if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
					failedAt = t
				}
			}
			if s, ok := get("deliveries"); ok {
				if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= 0 {
					deliveries = n
				}
			}
		}
		dst = bsoncore.AppendDateTimeElement(dst, "failedAt", failedAt.UnixMilli())
		if deliveries >= 0 {
			dst = bsoncore.AppendInt64Element(dst, "deliveries", deliveries)
		} else {
			dst = bsoncore.AppendNullElement(dst, "deliveries")
		}
	}
	for name := range e.values {
		if s, ok := get(name); ok && !used[name] {
			raw[name] = s
		}
	}
	dst = e.appendSystem(dst, defects, raw)
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	if len(dst) > message.MaxDocBytes {
		return nil, fmt.Errorf("entry %s: document of %d bytes: %w", e.entryID, len(dst), message.ErrTooLarge)
	}
	return dst, nil
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
	dst = appendEmptyDoc(dst, "headers")
	dst = bsoncore.AppendNullElement(dst, "payload")
	sidx, dst := bsoncore.AppendDocumentElementStart(dst, "_system")
	dst = bsoncore.AppendDateTimeElement(dst, "createdAt", now.UnixMilli())
	aidx, d := bsoncore.AppendArrayElementStart(dst, "defects")
	d = bsoncore.AppendStringElement(d, "0", string(DefectRefused))
	dst, _ = bsoncore.AppendArrayEnd(d, aidx)
	dst = bsoncore.AppendStringElement(dst, "error", safeString(errText))
	oidx, d := bsoncore.AppendDocumentElementStart(dst, "offloaded")
	d = appendRef(d, "document", ref)
	dst, _ = bsoncore.AppendDocumentEnd(d, oidx)
	dst, _ = bsoncore.AppendDocumentEnd(dst, sidx)
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
	sidx, dst := bsoncore.AppendDocumentElementStart(dst, "_system")
	dst = bsoncore.AppendDateTimeElement(dst, "createdAt", now.UnixMilli())
	aidx, d := bsoncore.AppendArrayElementStart(dst, "defects")
	d = bsoncore.AppendStringElement(d, "0", string(DefectRefused))
	dst, _ = bsoncore.AppendArrayEnd(d, aidx)
	dst = bsoncore.AppendStringElement(dst, "error", safeString(errText))
	cidx, d := bsoncore.AppendDocumentElementStart(dst, "source")
	d = bsoncore.AppendStringElement(d, "stream", safeString(key.String()))
	d = bsoncore.AppendStringElement(d, "kind", string(key.Kind))
	d = bsoncore.AppendStringElement(d, "id", entryID)
	dst, _ = bsoncore.AppendDocumentEnd(d, cidx)
	oidx, d := bsoncore.AppendDocumentElementStart(dst, "offloaded")
	d = appendRef(d, "document", ref)
	dst, _ = bsoncore.AppendDocumentEnd(d, oidx)
	dst, _ = bsoncore.AppendDocumentEnd(dst, sidx)
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
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
