// Package dlq handles dead letters: Chronow's dead-letter stream entries
// become dead_letters documents (Build, decoded by internal/entry), and
// entries delivered too often without being stored (poison) are
// dead-lettered with the last error and acknowledged (Poison).
//
// Every document made here has a deterministic _id, so a redelivered entry
// finds its document already stored (duplicate key = success) and the
// outcome is the same on every delivery.
package dlq

import (
	"fmt"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"

	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/message"
)

// The defects a dead-letter entry can have beyond those of message (payload
// and headers defects, field_not_string).
const (
	DefectOriginalIDMissing message.Defect = "original_msg_id_missing"
	DefectOriginalIDInvalid message.Defect = "original_msg_id_invalid"
	DefectReasonMissing     message.Defect = "reason_missing"
	DefectDeliveriesMissing message.Defect = "deliveries_missing"
	DefectDeliveriesInvalid message.Defect = "deliveries_invalid"
	DefectFailedAtMissing   message.Defect = "failed_at_missing"
	DefectFailedAtInvalid   message.Defect = "failed_at_invalid"
)

// dlqFields are the fields Chronow writes on a dead-letter entry.
var dlqFields = map[string]bool{
	"originalMsgId": true, "payload": true, "headers": true,
	"reason": true, "deliveries": true, "failedAt": true,
}

// Build builds the dead_letters document for the dead-letter entry id of the
// stream key:
//
//	_id         Identity(namespace, topic, id)
//	topic       the topic (the stream name)
//	msgId       originalMsgId, verbatim (null when missing)
//	tenantId, namespace
//	dlqId       the dead-letter entry's own id
//	reason      verbatim (null when missing)
//	headers     object (empty when missing or not an object)
//	payload     the JSON value (a string when not JSON, null when missing)
//	failedAt    Date from the ISO field (the dlqId time when missing/invalid)
//	deliveries  int64 (null when missing or not a non-negative integer)
//	extraFields unknown fields, verbatim
//	_system     createdAt, and defects + raw text of the faulty fields
func Build(key keyspace.Key, id string, values message.Fields, now time.Time) (message.Doc, error) {
	idTime, err := message.IDTime(id)
	if err != nil {
		return message.Doc{}, err
	}
	var defects []message.Defect
	raw := map[string]string{}
	field := func(name string) (string, bool) {
		s, present, isString := values.Get(name)
		if present && !isString {
			defects = append(defects, message.DefectFieldNotString)
			s = fmt.Sprint(values[name])
		}
		return s, present
	}

	docID := message.Identity(key.Namespace, key.Name, id)
	idx, dst := bsoncore.AppendDocumentStart(nil)
	dst = bsoncore.AppendStringElement(dst, "_id", docID)
	dst = bsoncore.AppendStringElement(dst, "topic", key.Name)
	if orig, ok := field("originalMsgId"); ok {
		if _, err := message.IDTime(orig); err != nil || !message.IsStreamID(orig) {
			defects = append(defects, DefectOriginalIDInvalid)
		}
		dst = bsoncore.AppendStringElement(dst, "msgId", orig)
	} else {
		defects = append(defects, DefectOriginalIDMissing)
		dst = bsoncore.AppendNullElement(dst, "msgId")
	}
	dst = bsoncore.AppendStringElement(dst, "tenantId", key.Tenant)
	dst = bsoncore.AppendStringElement(dst, "namespace", key.Namespace)
	dst = bsoncore.AppendStringElement(dst, "dlqId", id)
	if r, ok := field("reason"); ok {
		dst = bsoncore.AppendStringElement(dst, "reason", r)
	} else {
		defects = append(defects, DefectReasonMissing)
		dst = bsoncore.AppendNullElement(dst, "reason")
	}

	// parsed appends a field parsed by appendFn (headers or payload): a
	// field that does not parse keeps its text in raw, a missing one is
	// appended by missing.
	parsed := func(name string, appendFn func(dst []byte, name, text string) ([]byte, []message.Defect),
		missing func(dst []byte, name string) []byte, missingDefect message.Defect) {
		v, ok := field(name)
		if !ok {
			defects = append(defects, missingDefect)
			dst = missing(dst, name)
			return
		}
		var ds []message.Defect
		dst, ds = appendFn(dst, name, v)
		if len(ds) > 0 {
			defects = append(defects, ds...)
			raw[name] = v
		}
	}
	parsed("headers", message.AppendHeaders, message.AppendEmptyDoc, message.DefectHeadersMissing)
	parsed("payload", message.AppendPayload, bsoncore.AppendNullElement, message.DefectPayloadMissing)

	failedAt := idTime
	if s, ok := field("failedAt"); !ok {
		defects = append(defects, DefectFailedAtMissing)
	} else if t, err := time.Parse(time.RFC3339Nano, s); err != nil {
		defects = append(defects, DefectFailedAtInvalid)
		raw["failedAt"] = s
	} else {
		failedAt = t
	}
	dst = bsoncore.AppendDateTimeElement(dst, "failedAt", failedAt.UnixMilli())

	if s, ok := field("deliveries"); !ok {
		defects = append(defects, DefectDeliveriesMissing)
		dst = bsoncore.AppendNullElement(dst, "deliveries")
	} else if n, err := strconv.ParseInt(s, 10, 64); err != nil || n < 0 {
		defects = append(defects, DefectDeliveriesInvalid)
		raw["deliveries"] = s
		dst = bsoncore.AppendNullElement(dst, "deliveries")
	} else {
		dst = bsoncore.AppendInt64Element(dst, "deliveries", n)
	}

	dst = message.AppendExtraFields(dst, values, dlqFields)
	dst = message.AppendSystem(dst, now, defects, raw)
	dst, _ = bsoncore.AppendDocumentEnd(dst, idx)
	if len(dst) > message.MaxDocBytes {
		return message.Doc{ID: docID, Defects: defects}, fmt.Errorf("dead-letter entry %s: %d bytes: %w", id, len(dst), message.ErrTooLarge)
	}
	return message.Doc{ID: docID, Raw: dst, Defects: defects}, nil
}
