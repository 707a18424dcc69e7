package interop

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The persister's default prefix, and the two forms Chronow writes with it.
const prefix = "cw:"

// skey is a Chronow key as the test parses it, independently of the
// persister: the prefix, once or doubled, then tenant:namespace:kind:name.
type skey struct {
	raw     string
	doubled bool
	tenant  string
	ns      string
	kind    string
	name    string
}

func parseKey(k string) (skey, error) {
	out := skey{raw: k}
	rest, ok := strings.CutPrefix(k, prefix)
	if !ok {
		return out, fmt.Errorf("key %q: not under %q", k, prefix)
	}
	if r, ok := strings.CutPrefix(rest, prefix); ok {
		out.doubled, rest = true, r
	}
	parts := strings.SplitN(rest, ":", 4)
	if len(parts) != 4 || parts[0] == "" || parts[1] == "" || parts[3] == "" {
		return out, fmt.Errorf("key %q: not {prefix}{tenant}:{namespace}:{kind}:{name}", k)
	}
	out.tenant, out.ns, out.kind, out.name = parts[0], parts[1], parts[2], parts[3]
	return out, nil
}

// defectsAndRaw collects the defects and the raw text the persister must
// keep for one JSON field (payload, headers or val).
type defectsAndRaw struct {
	defects []string
	raw     *wDoc
}

func (d *defectsAndRaw) flag(field string, text string, info jsonInfo) {
	var ds []string
	if info.escapedKeys {
		ds = append(ds, field+"_keys_escaped")
	}
	if info.loneSurrogate {
		ds = append(ds, field+"_unicode_replaced")
	}
	if len(ds) == 0 {
		return
	}
	d.defects = append(d.defects, ds...)
	if d.raw == nil {
		d.raw = &wDoc{}
	}
	d.raw.add(field, text)
}

// system is the expected _system sub-document of a message or dead letter.
func (d *defectsAndRaw) system() *wDoc {
	s := (&wDoc{}).add("createdAt", anyDate{})
	if len(d.defects) > 0 {
		s.add("defects", wDefects(d.defects))
	}
	if d.raw != nil {
		s.add("raw", d.raw)
	}
	return s
}

// idMillis is the millisecond time of a stream id.
func idMillis(id string) (int64, error) {
	ms, _, _ := strings.Cut(id, "-")
	return strconv.ParseInt(ms, 10, 64)
}

func isoMillis(s string) (int64, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, err
	}
	return t.UnixMilli(), nil
}

// expectation is what one Redis entry or value must have become.
type expectation struct {
	doc *wDoc
	// refused: the server refuses the document (an array directly inside an
	// array): a stub stands in its place and doc is the document kept as
	// BSON in the raw_entries bucket.
	refused bool
}

// topicFields are the fields of Chronow's two kinds of topic entries.
var (
	publishFields = []string{"payload", "headers", "hash", "size", "publishedAt"}
	retryFields   = []string{"payload", "headers", "retryOf", "attempt"}
	dlqFields     = []string{"originalMsgId", "payload", "headers", "reason", "deliveries", "failedAt"}
)

func fieldNames(f map[string]string) []string {
	var out []string
	for k := range f {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sameFields(f map[string]string, want []string) bool {
	w := append([]string(nil), want...)
	sort.Strings(w)
	return strings.Join(fieldNames(f), ",") == strings.Join(w, ",")
}

// expectMessage is the messages document of topic entry id of stream k.
func expectMessage(k skey, id string, f map[string]string) (expectation, error) {
	retry := sameFields(f, retryFields)
	if !retry && !sameFields(f, publishFields) {
		return expectation{}, fmt.Errorf("fields %v are neither a publish %v nor a retry %v: Chronow wrote something the test does not know", fieldNames(f), publishFields, retryFields)
	}
	ms, err := idMillis(id)
	if err != nil {
		return expectation{}, err
	}
	b, err := decodeBody(f)
	if err != nil {
		return expectation{}, err
	}
	doc := identity(k, id, id).
		add("headers", b.headers).
		add("payload", b.payload).
		add("firstSeenAt", wDate(ms)).
		add("size", int64(len(f["payload"])))
	if retry {
		attempt, err := strconv.ParseInt(f["attempt"], 10, 64)
		if err != nil {
			return expectation{}, fmt.Errorf("attempt %q: %w", f["attempt"], err)
		}
		doc.add("retryOf", f["retryOf"]).add("attempt", attempt)
	} else {
		pub, err := isoMillis(f["publishedAt"])
		if err != nil {
			return expectation{}, fmt.Errorf("publishedAt: %w", err)
		}
		doc.add("hash", f["hash"]).add("publishedAt", wDate(pub))
	}
	doc.add("_system", b.dr.system())
	return expectation{doc: doc, refused: b.pinfo.arrayInArray}, nil
}

// identity starts the document of entry id of stream k with its identity
// fields; msgID is the message's id (for a dead letter, the original's).
func identity(k skey, id, msgID string) *wDoc {
	return (&wDoc{}).
		add("_id", k.ns+":"+k.name+":"+id).
		add("topic", k.name).
		add("msgId", msgID).
		add("tenantId", k.tenant).
		add("namespace", k.ns)
}

// entryBody is an entry's headers and payload as the persister must store them.
type entryBody struct {
	headers, payload any
	pinfo            jsonInfo // what the payload's JSON holds
	dr               defectsAndRaw
}

// decodeBody decodes an entry's headers and payload fields and flags the
// defects of each.
func decodeBody(f map[string]string) (entryBody, error) {
	var b entryBody
	var hinfo jsonInfo
	var err error
	if b.headers, hinfo, err = decodeJSON(f["headers"]); err != nil {
		return b, fmt.Errorf("headers: %w", err)
	}
	b.dr.flag("headers", f["headers"], hinfo)
	if b.payload, b.pinfo, err = decodeJSON(f["payload"]); err != nil {
		return b, fmt.Errorf("payload: %w", err)
	}
	b.dr.flag("payload", f["payload"], b.pinfo)
	return b, nil
}

// expectDeadLetter is the dead_letters document of dead-letter entry id.
func expectDeadLetter(k skey, id string, f map[string]string) (expectation, error) {
	if !sameFields(f, dlqFields) {
		return expectation{}, fmt.Errorf("fields %v, want Chronow's dead-letter fields %v", fieldNames(f), dlqFields)
	}
	failed, err := isoMillis(f["failedAt"])
	if err != nil {
		return expectation{}, fmt.Errorf("failedAt: %w", err)
	}
	deliveries, err := strconv.ParseInt(f["deliveries"], 10, 64)
	if err != nil {
		return expectation{}, fmt.Errorf("deliveries: %w", err)
	}
	b, err := decodeBody(f)
	if err != nil {
		return expectation{}, err
	}
	doc := identity(k, id, f["originalMsgId"]).
		add("dlqId", id).
		add("reason", f["reason"]).
		add("headers", b.headers).
		add("payload", b.payload).
		add("failedAt", wDate(failed)).
		add("deliveries", deliveries).
		add("_system", b.dr.system())
	return expectation{doc: doc, refused: b.pinfo.arrayInArray}, nil
}

// stubOf is what must stand where a refused document would be: the
// identity, payload null, the refusal and where the document went.
func stubOf(doc *wDoc) *wDoc {
	stub := &wDoc{partial: true}
	for _, k := range []string{"_id", "topic", "msgId", "tenantId", "namespace"} {
		v, _ := doc.get(k)
		stub.add(k, v)
	}
	stub.add("payload", nil)
	stub.add("_system", (&wDoc{partial: true}).
		add("defects", wContains{"refused_by_server"}).
		add("error", anyString{}).
		add("offloaded", (&wDoc{partial: true}).
			add("document", (&wDoc{partial: true}).
				add("bucket", "raw_entries").
				add("fileId", anyString{}))))
	return stub
}

// expectShared is the shared_memory document of a key whose last value was
// text (JSON.stringify of the value, as Chronow wrote it).
func expectShared(k skey, text string) (*wDoc, error) {
	val, info, err := decodeJSON(text)
	if err != nil {
		return nil, fmt.Errorf("val: %w", err)
	}
	doc := (&wDoc{}).
		add("_id", anyValue{}).
		add("key", k.name).
		add("namespace", k.ns).
		add("tenantId", k.tenant)
	if info.arrayInArray {
		// Refused by the server: kept as raw text, never silently stale.
		return doc.add("val", nil).add("_system", (&wDoc{partial: true}).
			add("defects", wDefects{"refused_by_server"}).
			add("error", anyString{}).
			add("raw", (&wDoc{}).add("val", text))), nil
	}
	var dr defectsAndRaw
	dr.flag("val", text, info)
	sum := sha1.Sum([]byte(text))
	sys := (&wDoc{}).
		add("createdAt", anyDate{}).
		add("updatedAt", anyDate{}).
		add("version", anyInt64{}).
		add("hash", hex.EncodeToString(sum[:]))
	if len(dr.defects) > 0 {
		sys.add("defects", wDefects(dr.defects))
		sys.add("raw", dr.raw)
	}
	return doc.add("val", val).add("_system", sys), nil
}
