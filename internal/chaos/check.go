package chaos

import (
	"bufio"
	"context"
	"crypto/sha1" //nolint:gosec // the persister's shared-memory hash is SHA-1
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/chronow/persister/internal/e2e"
	"github.com/chronow/persister/internal/keyspace"
)

// checker compares the ledger with Redis, the databases and the metrics.
type checker struct {
	w         *world
	led       *ledger
	hist      *history
	lastState string
}

func (c *checker) streams() []string {
	set := map[string]bool{}
	for _, r := range c.led.records() {
		set[r.Stream] = true
	}
	var out []string
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// caughtUp reports whether the group has read every entry of every stream
// and nothing is pending.
func (c *checker) caughtUp(ctx context.Context) (bool, string, int64) {
	var pending int64
	behind := ""
	for _, s := range c.streams() {
		info, err := c.w.rdb.XInfoStream(ctx, s).Result()
		if err != nil {
			return false, fmt.Sprintf("xinfo stream %s: %v", s, err), -1
		}
		groups, err := c.w.rdb.XInfoGroups(ctx, s).Result()
		if err != nil {
			return false, fmt.Sprintf("xinfo groups %s: %v", s, err), -1
		}
		found := false
		for _, g := range groups {
			if g.Name != group {
				continue
			}
			found = true
			pending += g.Pending
			if (g.Pending != 0 || g.LastDeliveredID != info.LastGeneratedID) && behind == "" {
				behind = fmt.Sprintf("%s: pending %d, delivered up to %s of %s", s, g.Pending, g.LastDeliveredID, info.LastGeneratedID)
			}
		}
		if !found && behind == "" {
			behind = fmt.Sprintf("%s: no group %q", s, group)
		}
	}
	return behind == "", behind, pending
}

type smDoc struct {
	TenantID  string `bson:"tenantId"`
	Namespace string `bson:"namespace"`
	Key       string `bson:"key"`
	System    struct {
		Hash string `bson:"hash"`
	} `bson:"_system"`
}

// smWrong lists the keys whose warm copy is not the last value set.
func (c *checker) smWrong(ctx context.Context) ([]string, error) {
	want := c.led.smValues()
	got := map[string]string{}
	for _, tn := range tenants {
		var docs []smDoc
		if err := findAll(ctx, c.w.home(tn).Database(dbName(tn)).Collection("shared_memory"), &docs); err != nil {
			return nil, err
		}
		for _, d := range docs {
			k := keyspace.Key{Prefix: prefix, Tenant: d.TenantID, Namespace: d.Namespace, Kind: keyspace.KindSharedMemory, Name: d.Key}.String()
			got[k] = d.System.Hash
		}
	}
	var wrong []string
	for k, v := range want {
		sum := sha1.Sum([]byte(v)) //nolint:gosec // matching the persister's hash
		if got[k] != hex.EncodeToString(sum[:]) {
			wrong = append(wrong, fmt.Sprintf("%s (last value %s)", k, v))
		}
	}
	sort.Strings(wrong)
	return wrong, nil
}

// waitSettled polls until the group has caught up and every warm copy is
// the last value, or timeout.
func (c *checker) waitSettled(ctx context.Context, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		ok, state, _ := c.caughtUp(ctx)
		if ok {
			wrong, err := c.smWrong(ctx)
			switch {
			case err != nil:
				ok, state = false, err.Error()
			case len(wrong) > 0:
				ok, state = false, fmt.Sprintf("%d shared-memory keys not yet at their last value, e.g. %s", len(wrong), wrong[0])
			}
		}
		if ok {
			c.hist.logf("settled")
			return true
		}
		if state != c.lastState {
			c.hist.logf("quiet period: %s", state)
		}
		c.lastState = state
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(time.Second)
	}
}

// storedDoc is the part of a messages or dead_letters document checked.
type storedDoc struct {
	ID        string `bson:"_id"`
	TenantID  string `bson:"tenantId"`
	Namespace string `bson:"namespace"`
	Topic     string `bson:"topic"`
	MsgID     any    `bson:"msgId"`
	DLQID     string `bson:"dlqId"`
	Reason    any    `bson:"reason"`
	Hash      string `bson:"hash"`
	Payload   struct {
		Seq int `bson:"seq"`
	} `bson:"payload"`
	Headers struct {
		TraceID string `bson:"traceId"`
	} `bson:"headers"`
}

// findAll reads a whole collection in one batch, retrying a failed pass
// (FerretDB's cursors are bound to a connection).
func findAll[T any](ctx context.Context, coll *mongo.Collection, out *[]T) error {
	var err error
	for attempt := range 5 {
		var cur *mongo.Cursor
		cur, err = coll.Find(ctx, bson.D{}, options.Find().SetBatchSize(1000000))
		if err == nil {
			var docs []T
			if err = cur.All(ctx, &docs); err == nil {
				*out = docs
				return nil
			}
		}
		time.Sleep(time.Duration(attempt+1) * 300 * time.Millisecond)
	}
	return fmt.Errorf("read %s.%s: %w", coll.Database().Name(), coll.Name(), err)
}

// failf records one finding of the checker.
type failf func(format string, args ...any)

// place is a tenant's collection.
type place struct{ tenant, coll string }

// check compares what the ledger says was published with what MongoDB, the
// group, shared memory and the metrics say, and records every mismatch in
// res.Failures.
func (c *checker) check(ctx context.Context, res *Result) {
	s := &res.Summary
	fail := func(format string, args ...any) { res.Failures = append(res.Failures, fmt.Sprintf(format, args...)) }
	recs := c.led.records()
	c.countPublished(s, recs)
	trimmedPending := c.countTrims(ctx, s, fail)
	docs := c.readDocs(ctx, fail)
	storedMsgs, storedDL := compareDocs(s, recs, docs, trimmedPending, fail)
	c.checkPendingAndSM(ctx, s, fail)
	c.checkMetrics(s, storedMsgs, storedDL, fail)
}

// countPublished counts what the producer published.
func (c *checker) countPublished(s *Summary, recs []*record) {
	s.Published = len(recs)
	for _, r := range recs {
		if r.Kind == string(keyspace.KindDLQ) {
			s.PublishedDLQ++
		}
	}
	sm := c.led.smValues()
	s.SMKeys = len(sm)
	c.led.mu.Lock()
	s.SMSets = c.led.smSets
	c.led.mu.Unlock()
}

// countTrims counts what was trimmed, and returns which of it was pending
// then (as "stream/id").
func (c *checker) countTrims(ctx context.Context, s *Summary, fail failf) map[string]bool {
	trims, err := readTrims(ctx, c.w.rdb)
	if err != nil {
		fail("%v", err)
	}
	trimmedPending := map[string]bool{}
	for _, t := range trims {
		if t.Removed > 0 {
			s.Trims++
		}
		s.Trimmed += int(t.Removed)
		for _, id := range t.Pending {
			if !trimmedPending[t.Stream+"/"+id] {
				trimmedPending[t.Stream+"/"+id] = true
				s.TrimmedPend++
			}
		}
	}
	return trimmedPending
}

// readDocs reads every document of every tenant, by _id.
func (c *checker) readDocs(ctx context.Context, fail failf) map[place]map[string]storedDoc {
	docs := map[place]map[string]storedDoc{}
	for _, tn := range tenants {
		for _, coll := range []string{"messages", "dead_letters"} {
			var ds []storedDoc
			if err := findAll(ctx, c.w.home(tn).Database(dbName(tn)).Collection(coll), &ds); err != nil {
				fail("%v", err)
				continue
			}
			m := map[string]storedDoc{}
			for _, d := range ds {
				m[d.ID] = d
			}
			docs[place{tn, coll}] = m
		}
	}
	return docs
}

// compareDocs finds each ledger entry's document (lost, wrong or ok) and
// the documents of no entry; it returns how many ledger messages and dead
// letters are stored.
func compareDocs(s *Summary, recs []*record, docs map[place]map[string]storedDoc, trimmedPending map[string]bool, fail failf) (storedMsgs, storedDL int) {
	seen := map[place]map[string]bool{}
	var lost, wrong []string
	for _, r := range recs {
		pl := place{r.Tenant, r.coll()}
		d, ok := docs[pl][r.DocID()]
		if !ok {
			if trimmedPending[r.Stream+"/"+r.ID] {
				s.LostToTrim++
				continue
			}
			s.Lost++
			lost = append(lost, fmt.Sprintf("%s %s (seq %d)", r.Stream, r.ID, r.Seq))
			continue
		}
		if seen[pl] == nil {
			seen[pl] = map[string]bool{}
		}
		seen[pl][r.DocID()] = true
		if trimmedPending[r.Stream+"/"+r.ID] {
			s.TrimmedStored++
		}
		if r.coll() == "messages" {
			storedMsgs++
		} else {
			storedDL++
		}
		if why := fieldsDiffer(r, d); why != "" {
			s.WrongFields++
			wrong = append(wrong, fmt.Sprintf("%s %s: %s", r.Stream, r.ID, why))
			continue
		}
		s.OK++
	}
	unexpected := unexpectedDocs(s, docs, seen)
	if s.Lost > 0 {
		fail("%d entries lost (not stored, not trimmed while pending), e.g. %s", s.Lost, clip(lost))
	}
	if s.WrongFields > 0 {
		fail("%d entries stored with wrong fields, e.g. %s", s.WrongFields, clip(wrong))
	}
	if len(unexpected) > 0 {
		sort.Strings(unexpected)
		fail("%d documents without a ledger entry (%d in another tenant's database), e.g. %s", len(unexpected), s.Duplicated, clip(unexpected))
	}
	return storedMsgs, storedDL
}

// unexpectedDocs lists (and counts) the documents no ledger entry has seen.
func unexpectedDocs(s *Summary, docs map[place]map[string]storedDoc, seen map[place]map[string]bool) []string {
	var unexpected []string
	for pl, m := range docs {
		for id, d := range m {
			if seen[pl][id] {
				continue
			}
			// A document in the wrong place that matches an entry of
			// the ledger is a duplicate; anything else is unexpected.
			if d.TenantID != pl.tenant {
				s.Duplicated++
			} else {
				s.Unexpected++
			}
			unexpected = append(unexpected, fmt.Sprintf("%s.%s %s (tenantId %s)", dbName(pl.tenant), pl.coll, id, d.TenantID))
		}
	}
	return unexpected
}

// checkPendingAndSM checks the group's pending list and shared memory.
func (c *checker) checkPendingAndSM(ctx context.Context, s *Summary, fail failf) {
	_, state, pending := c.caughtUp(ctx)
	s.Pending = pending
	if pending != 0 {
		fail("the group has %d entries pending after the quiet period (%s)", pending, state)
	}
	if w, err := c.smWrong(ctx); err != nil {
		fail("shared memory: %v", err)
	} else if len(w) > 0 {
		s.SMWrong = len(w)
		fail("%d shared-memory keys whose warm copy is not the last value set, e.g. %s", len(w), clip(w))
	}
}

// checkMetrics checks the replicas' counters against what is stored. A
// counter of an incarnation killed with -9 is known up to its last scrape
// (every 200ms, and just before the signal), so the sums can only fall
// short of the truth: the checks are those that hold exactly, and the gaps
// are reported.
func (c *checker) checkMetrics(s *Summary, storedMsgs, storedDL int, fail failf) {
	var m e2e.Counters
	for _, rp := range c.w.replicas {
		m = m.Plus(rp.counts.Totals())
	}
	s.Metrics = m
	logged, err := lostLogged(c.w.replicas)
	if err != nil {
		fail("replica logs: %v", err)
	}
	s.LostLogged = logged
	s.Unattributed = storedMsgs + storedDL - int(m.Inserted+m.DLInserted)
	if int(m.Inserted) > storedMsgs {
		fail("metrics: %v messages inserted, but only %d ledger entries are stored", m.Inserted, storedMsgs)
	}
	if int(m.DLInserted) > storedDL {
		fail("metrics: %v dead letters inserted, but only %d ledger dead letters are stored", m.DLInserted, storedDL)
	}
	if s.Unattributed > int(m.Duplicate)+c.killed()*int(batchLimit) {
		fail("metrics: %d stored documents counted by no scrape, more than the %v duplicates plus what %d killed incarnations could have left unscraped", s.Unattributed, m.Duplicate, c.killed())
	}
	if m.DeadLettered != 0 {
		fail("metrics: persister_entries_dead_lettered_total = %v; the producer wrote no bad input, so none should be (a good entry taken for poison?)", m.DeadLettered)
	}
	// Lost to trim: every missing entry is one the persister counted
	// (its log line is written with the counter), and it counted only
	// entries that were trimmed while pending.
	if s.LostToTrim > logged {
		fail("lost-to-trim: %d trimmed-while-pending entries are missing, but the persister counted only %d lost", s.LostToTrim, logged)
	}
	if logged > s.TrimmedPend {
		fail("lost-to-trim: the persister counted %d lost, but only %d entries were trimmed while pending", logged, s.TrimmedPend)
	}
	if int(m.Lost) > logged {
		fail("lost-to-trim: persister_entries_lost_total = %v, more than the %d its logs count", m.Lost, logged)
	}
}

// batchLimit bounds the entries one incarnation has in hand (a batch per
// tenant, two in flight): what a kill -9 can leave unscraped.
const batchLimit = 100 * 2 * 3

func (c *checker) killed() int {
	n := 0
	for _, rp := range c.w.replicas {
		rp.mu.Lock()
		n += rp.ended
		rp.mu.Unlock()
	}
	return n
}

func fieldsDiffer(r *record, d storedDoc) string {
	var diffs []string
	want := func(name string, got, exp any) {
		if fmt.Sprint(got) != fmt.Sprint(exp) {
			diffs = append(diffs, fmt.Sprintf("%s %v, want %v", name, got, exp))
		}
	}
	want("tenantId", d.TenantID, r.Tenant)
	want("namespace", d.Namespace, r.NS)
	want("topic", d.Topic, r.Topic)
	want("payload.seq", d.Payload.Seq, r.Seq)
	want("headers.traceId", d.Headers.TraceID, r.Headers["traceId"])
	if r.Kind == string(keyspace.KindDLQ) {
		want("dlqId", d.DLQID, r.ID)
		want("msgId", d.MsgID, r.Orig)
		want("reason", d.Reason, r.Reason)
	} else {
		want("msgId", d.MsgID, r.ID)
		want("hash", d.Hash, sha256hex(r.Payload))
	}
	return strings.Join(diffs, "; ")
}

// lostLogged sums the "count" of the persister's "counted as lost" log
// lines over every incarnation of every replica.
func lostLogged(reps []*replica) (int, error) {
	total := 0
	for _, rp := range reps {
		f, err := os.Open(rp.logPath)
		if err != nil {
			return 0, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			if !strings.Contains(string(line), "before they were stored; counted as lost") {
				continue
			}
			var v struct {
				Count int `json:"count"`
			}
			if json.Unmarshal(line, &v) == nil {
				total += v.Count
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return 0, err
		}
	}
	return total, nil
}

func clip(s []string) string {
	if len(s) > 5 {
		return strings.Join(s[:5], "; ") + fmt.Sprintf("; ... (%d)", len(s))
	}
	return strings.Join(s, "; ")
}

// breakAndCheck deletes one stored document, adds one no ledger entry
// explains and changes the ledger's last value of one shared-memory key,
// then checks again: the checker must see exactly these three.
func (c *checker) breakAndCheck(ctx context.Context) (*Result, error) {
	var victim *record
	for _, r := range c.led.records() {
		if r.Kind == string(keyspace.KindTopic) {
			n, err := c.w.home(r.Tenant).Database(dbName(r.Tenant)).Collection("messages").CountDocuments(ctx, bson.D{{Key: "_id", Value: r.DocID()}})
			if err != nil {
				return nil, err
			}
			if n == 1 {
				victim = r
				break
			}
		}
	}
	if victim == nil {
		return nil, fmt.Errorf("no stored topic entry to delete")
	}
	if _, err := c.w.home(victim.Tenant).Database(dbName(victim.Tenant)).Collection("messages").DeleteOne(ctx, bson.D{{Key: "_id", Value: victim.DocID()}}); err != nil {
		return nil, err
	}
	if _, err := c.w.mcA.Database(dbName(tenants[0])).Collection("messages").InsertOne(ctx,
		bson.D{{Key: "_id", Value: "payments:orders:1-1"}, {Key: "tenantId", Value: tenants[0]}}); err != nil {
		return nil, err
	}
	for k := range c.led.smValues() {
		c.led.mu.Lock()
		c.led.sm[k] = `"not the last value"`
		c.led.mu.Unlock()
		break
	}
	res := &Result{Faults: map[string]int{}}
	c.check(ctx, res)
	return res, nil
}
