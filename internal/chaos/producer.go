package chaos

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/message"
	"github.com/chronow/persister/internal/publisher"
)

const (
	prefix = "cw:"
	group  = "persister"
)

// The world's layout: the last tenant has a database server of its own.
var (
	tenants    = []string{"acme", "globex", "initech"}
	namespaces = []string{"payments", "default"}
	topics     = []string{"orders", "billing:eu"}
	smNames    = []string{"config:eu", "limits", "flags"}
)

// dbName is the database of a tenant in the chronos config.
func dbName(tenant string) string { return "cm_" + tenant }

// record is one entry the producer wrote, with the id Redis holds it under.
type record struct {
	Kind    string // keyspace.KindTopic or keyspace.KindDLQ
	Stream  string
	ID      string
	Tenant  string
	NS      string
	Topic   string
	Seq     int
	Payload string
	Headers map[string]string
	Orig    string // dead letters: originalMsgId
	Reason  string // dead letters
}

// DocID is the _id the persister gives the entry's document.
func (r *record) DocID() string { return message.Identity(r.NS, r.Topic, r.ID) }

func (r *record) coll() string {
	if r.Kind == string(keyspace.KindDLQ) {
		return "dead_letters"
	}
	return "messages"
}

// ledger is what the producer knows Redis holds: every entry whose XADD
// was confirmed, and the last confirmed value of every shared-memory key.
type ledger struct {
	mu      sync.Mutex
	entries []*record
	byKey   map[string]*record // stream/id
	sm      map[string]string  // key -> last value set
	smSets  int
}

func newLedger() *ledger {
	return &ledger{byKey: map[string]*record{}, sm: map[string]string{}}
}

func (l *ledger) add(r *record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = append(l.entries, r)
	l.byKey[r.Stream+"/"+r.ID] = r
}

func (l *ledger) records() []*record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*record(nil), l.entries...)
}

func (l *ledger) lookup(stream, id string) *record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byKey[stream+"/"+id]
}

func (l *ledger) setSM(key, val string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sm[key] = val
	l.smSets++
}

func (l *ledger) smValues() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]string, len(l.sm))
	for k, v := range l.sm {
		out[k] = v
	}
	return out
}

// producer writes Chronow entries with ids it chooses (like XADD *, but
// known before the write): a write whose reply is lost is sent again with
// the same id, and Redis's "equal or smaller than the top item" answer then
// proves it is already there. So the ledger is exact across Redis pauses,
// restarts and cut connections. It is the only writer of its streams.
type producer struct {
	rdb    *redis.Client
	rng    *rand.Rand
	ledger *ledger
	hist   *history
	rate   int // entries per second

	seq     int
	lastID  map[string][2]int64 // stream -> last ms, seq
	topics  []*record           // recent topic entries, for dead letters' originalMsgId
	retries int
}

type pending struct {
	rec  *record
	vals []any
	key  string // shared memory: key, vals[0] the value
}

// run writes until stop is closed; every tick one small pipeline of topic
// entries and, now and then, a dead letter and a shared-memory SET. It
// returns false if writes were still unconfirmed limit after stop.
func (p *producer) run(stop <-chan struct{}, limit time.Duration) bool {
	const tick = 50 * time.Millisecond
	per := max(1, p.rate*int(tick/time.Millisecond)/1000)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return true
		case <-t.C:
		}
		var batch []pending
		for range per {
			batch = append(batch, p.topicEntry())
		}
		if p.rng.IntN(4) == 0 && len(p.topics) > 0 {
			batch = append(batch, p.deadLetter())
		}
		if p.rng.IntN(3) == 0 {
			batch = append(batch, p.smSet())
		}
		if !p.write(stop, limit, batch) {
			return false
		}
	}
}

func (p *producer) nextID(stream string) string {
	now := time.Now().UnixMilli()
	last := p.lastID[stream]
	if now > last[0] {
		last = [2]int64{now, 0}
	} else {
		last[1]++
	}
	p.lastID[stream] = last
	return fmt.Sprintf("%d-%d", last[0], last[1])
}

func (p *producer) topicEntry() pending {
	p.seq++
	tn, ns, tp := tenants[p.rng.IntN(len(tenants))], namespaces[p.rng.IntN(len(namespaces))], topics[p.rng.IntN(len(topics))]
	m := publisher.Message{
		Tenant: tn, Namespace: ns, Topic: tp,
		Payload: fmt.Sprintf(`{"seq":%d,"tenant":%q,"big":9007199254740993,"pad":%q}`, p.seq, tn, strings.Repeat("x", p.rng.IntN(200))),
		Headers: map[string]string{"traceId": fmt.Sprintf("chaos-%d", p.seq)},
	}
	key := m.Key(prefix)
	r := &record{Kind: string(keyspace.KindTopic), Stream: key, ID: p.nextID(key), Tenant: tn, NS: ns, Topic: tp,
		Seq: p.seq, Payload: m.Payload, Headers: m.Headers}
	return pending{rec: r, vals: m.Values()}
}

func (p *producer) deadLetter() pending {
	p.seq++
	orig := p.topics[p.rng.IntN(len(p.topics))]
	d := publisher.DeadLetter{
		Tenant: orig.Tenant, Namespace: orig.NS, Topic: orig.Topic, OriginalMsgID: orig.ID,
		Payload: fmt.Sprintf(`{"seq":%d,"dead":true}`, p.seq), Headers: map[string]string{"traceId": fmt.Sprintf("chaos-%d", p.seq)},
		Reason: "max deliveries", Deliveries: 1,
	}
	key := d.Key(prefix)
	r := &record{Kind: string(keyspace.KindDLQ), Stream: key, ID: p.nextID(key), Tenant: d.Tenant, NS: d.Namespace, Topic: d.Topic,
		Seq: p.seq, Payload: d.Payload, Headers: d.Headers, Orig: d.OriginalMsgID, Reason: d.Reason}
	return pending{rec: r, vals: d.Values()}
}

func (p *producer) smSet() pending {
	p.seq++
	tn, ns, name := tenants[p.rng.IntN(len(tenants))], namespaces[p.rng.IntN(len(namespaces))], smNames[p.rng.IntN(len(smNames))]
	key := keyspace.Key{Prefix: prefix, Tenant: tn, Namespace: ns, Kind: keyspace.KindSharedMemory, Name: name}.String()
	return pending{key: key, vals: []any{fmt.Sprintf(`{"seq":%d,"key":%q}`, p.seq, name)}}
}

// write sends the batch until every write is confirmed, or gives up limit
// after stop is closed (false).
func (p *producer) write(stop <-chan struct{}, limit time.Duration, batch []pending) bool {
	var stoppedAt time.Time
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			p.retries++
			if stoppedAt.IsZero() {
				select {
				case <-stop:
					stoppedAt = time.Now()
				default:
				}
			}
			if !stoppedAt.IsZero() && time.Since(stoppedAt) > limit {
				return false
			}
			time.Sleep(200 * time.Millisecond)
		}
		ctx := context.Background()
		cmds := make([]redis.Cmder, len(batch))
		wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, _ = p.rdb.Pipelined(wctx, func(pipe redis.Pipeliner) error {
			for i, w := range batch {
				if w.rec != nil {
					cmds[i] = pipe.XAdd(wctx, &redis.XAddArgs{Stream: w.rec.Stream, ID: w.rec.ID, Values: w.vals})
				} else {
					cmds[i] = pipe.Set(wctx, w.key, w.vals[0], time.Hour)
				}
			}
			return nil
		})
		cancel()
		var left []pending
		for i, w := range batch {
			err := cmds[i].Err()
			switch {
			case err == nil:
			case w.rec != nil && strings.Contains(err.Error(), "equal or smaller than the target stream top item"):
				if attempt == 0 {
					// Never for a first attempt: ids only grow.
					p.hist.logf("producer: BUG: first XADD of %s %s refused: %v", w.rec.Stream, w.rec.ID, err)
				}
			default:
				left = append(left, w)
				continue
			}
			if w.rec != nil {
				p.ledger.add(w.rec)
				if w.rec.Kind == string(keyspace.KindTopic) {
					p.topics = append(p.topics, w.rec)
					if len(p.topics) > 200 {
						p.topics = p.topics[len(p.topics)-200:]
					}
				}
			} else {
				p.ledger.setSM(w.key, w.vals[0].(string))
			}
		}
		if len(left) == 0 {
			return true
		}
		batch = left
	}
}

func sha256hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
