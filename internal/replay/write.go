package replay

import (
	"context"
	"fmt"
	"time"

	"github.com/chronow/persister/internal/batch"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/retry"
)

// maxRefusals bounds the refusals kept per stream (the count stays exact).
const maxRefusals = 1000

// Refusal is one entry that could not be stored, and why.
type Refusal struct {
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

// StreamReport is the outcome of replaying one stream.
type StreamReport struct {
	Stream    string `json:"stream"`
	Tenant    string `json:"tenant"`
	Namespace string `json:"namespace"`
	Kind      string `json:"kind"`
	Topic     string `json:"topic"`
	// Read counts the entries read from Redis in the range.
	Read int `json:"read"`
	// Stored counts documents newly inserted.
	Stored int `json:"stored"`
	// Present counts documents that were already stored (the usual one or
	// the one that stands in for it).
	Present int `json:"present"`
	// Rescued counts entries newly stored another way (by the Rescuer:
	// too large, or refused by MongoDB as they were).
	Rescued int `json:"rescued"`
	// Refused counts entries not stored; Refusals says why (at most 1000).
	Refused  int       `json:"refused"`
	Refusals []Refusal `json:"refusals,omitempty"`
	// LastID is the last entry id fully handled.
	LastID string `json:"lastId,omitempty"`
}

func newStreamReport(k keyspace.Key) StreamReport {
	return StreamReport{Stream: k.String(), Tenant: k.Tenant, Namespace: k.Namespace, Kind: string(k.Kind), Topic: k.Name}
}

func (s *StreamReport) refuse(id, reason string) {
	s.Refused++
	if len(s.Refusals) < maxRefusals {
		s.Refusals = append(s.Refusals, Refusal{ID: id, Reason: reason})
	}
}

// Report is the outcome of a replay.
type Report struct {
	Range        string         `json:"range"`
	Streams      []StreamReport `json:"streams"`
	Unconfigured []string       `json:"unconfiguredStreams,omitempty"`
	Totals       StreamReport   `json:"totals"`
	Seconds      float64        `json:"seconds"`
	// TopicsSynced counts the topic streams whose topics document was
	// written (or found up to date) after the replay.
	TopicsSynced int `json:"topicsSynced"`
	// Warnings are problems that did not stop the replay.
	Warnings []string `json:"warnings,omitempty"`
	// Error is set when the replay stopped early.
	Error string `json:"error,omitempty"`
}

func (r *Report) total() {
	t := StreamReport{Stream: "total"}
	for _, s := range r.Streams {
		t.Read += s.Read
		t.Stored += s.Stored
		t.Present += s.Present
		t.Rescued += s.Rescued
		t.Refused += s.Refused
	}
	r.Totals = t
}

// plan lists the streams the filter selects, adds the names of those no
// tenant configures to unconfigured, and returns a progress meter sized by
// the selected streams' estimated length.
func (r *Replayer) plan(ctx context.Context, f Filter, verb string, unconfigured *[]string) ([]keyspace.Key, *meter, error) {
	keys, unconf, err := r.Streams(ctx, f)
	if err != nil {
		return nil, nil, err
	}
	for _, k := range unconf {
		*unconfigured = append(*unconfigured, k.String())
	}
	var total int64
	for _, k := range keys {
		total += r.estimate(ctx, k.String(), f.Range)
	}
	return keys, newMeter(r.cfg.Progress, r.cfg.TTY, verb, total), nil
}

// Replay reads every selected stream in the filter's range and stores each
// entry through the idempotent insert path. Entries already stored are
// counted as present and left as they are. On error the report holds what
// was done so far, and the error says where to resume.
func (r *Replayer) Replay(ctx context.Context, f Filter) (*Report, error) {
	f = f.orAll()
	rep := &Report{Range: f.Range.String()}
	defer stopwatch(&rep.Seconds, rep.total)()
	keys, m, err := r.plan(ctx, f, "replay", &rep.Unconfigured)
	if err != nil {
		return rep, err
	}
	lim := &limiter{rate: r.cfg.Rate}
	for _, k := range keys {
		sr := newStreamReport(k)
		err := r.replayStream(ctx, k, f.Range, &sr, m, lim)
		rep.Streams = append(rep.Streams, sr)
		if err != nil {
			m.finish()
			resume := f.Range.From.String()
			if sr.LastID != "" {
				last, _ := ParseID(sr.LastID)
				resume = last.Next().String()
			}
			err = fmt.Errorf("stream %s: %w (entries up to %s are stored; resume with --tenant %s --namespace %s --topic %s --kind %s --from %s)",
				k, err, orNone(sr.LastID), k.Tenant, k.Namespace, k.Name, k.Kind, resume)
			rep.Error = err.Error()
			return rep, err
		}
	}
	m.finish()
	if r.cfg.Topics != nil {
		byTenant := map[string][]keyspace.Key{}
		n := 0
		for _, k := range keys {
			if k.Kind == keyspace.KindTopic {
				byTenant[k.Tenant] = append(byTenant[k.Tenant], k)
				n++
			}
		}
		if n > 0 {
			if err := r.cfg.Topics.Sync(ctx, byTenant); err != nil {
				rep.Warnings = append(rep.Warnings, fmt.Sprintf("topics documents not written: %v (the daemon writes them when it next sees the streams)", err))
			} else {
				rep.TopicsSynced = n
			}
		}
	}
	return rep, nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func (r *Replayer) replayStream(ctx context.Context, k keyspace.Key, rng Range, sr *StreamReport, m *meter, lim *limiter) error {
	dec := r.cfg.Decoders[k.Kind]
	stream := k.String()
	from := rng.From
	for {
		msgs, err := r.page(ctx, stream, from, rng)
		if err != nil {
			return err
		}
		if len(msgs) == 0 {
			return nil
		}
		if err := lim.wait(ctx, len(msgs)); err != nil {
			return err
		}
		now := time.Now()
		items := make([]batch.Item, 0, len(msgs))
		for _, msg := range msgs {
			sr.Read++
			it, _, err := dec.Decode(k, msg, now)
			if err != nil {
				if r.cfg.Rescuer != nil {
					if rit, ok := r.cfg.Rescuer.RescueEntry(ctx, k, msg, err); ok {
						rit.Stream, rit.ID, rit.Kind, rit.Attempts = stream, msg.ID, string(k.Kind), 1
						items = append(items, rit)
						continue
					}
				}
				sr.refuse(msg.ID, "no document can be built: "+err.Error())
				continue
			}
			it.Stream, it.ID, it.Kind = stream, msg.ID, string(k.Kind)
			items = append(items, it)
		}
		if err := r.write(ctx, k.Tenant, items, sr); err != nil {
			return err
		}
		last, err := ParseID(msgs[len(msgs)-1].ID)
		if err != nil {
			return err
		}
		sr.LastID = last.String()
		m.add(len(msgs), stream)
		if len(msgs) < r.cfg.PageSize || last == rng.To || last == MaxID {
			return nil
		}
		from = last.Next()
	}
}

// write stores items until each is stored, present, rescued or refused,
// under the write rule (batch.Insert), with a bounded number of attempts.
func (r *Replayer) write(ctx context.Context, tenant string, items []batch.Item, sr *StreamReport) error {
	pending := items
	var lastErr error
	for attempt := 0; len(pending) > 0; attempt++ {
		if attempt >= r.cfg.Attempts {
			return fmt.Errorf("%d entries not stored after %d attempts: %w", len(pending), attempt, lastErr)
		}
		if attempt > 0 {
			if err := writeBackoff().Wait(ctx, attempt); err != nil {
				return err
			}
		}
		var retry []batch.Item
		for _, chunk := range chunks(pending, r.cfg.MaxBatchBytes) {
			out := batch.Insert(ctx, r.store, tenant, chunk[0].Collection, chunk, r.cfg.Rescuer, r.cfg.WriteTimeout)
			if out.Err != nil && ctx.Err() != nil {
				return ctx.Err()
			}
			for i, d := range out.Decisions {
				it := chunk[i]
				switch d {
				case batch.Present:
					sr.Present++
				case batch.Inserted:
					if it.Attempts > 0 {
						sr.Rescued++
					} else {
						sr.Stored++
					}
				case batch.Rescued:
					retry = append(retry, out.Replacements[i])
				case batch.Refused:
					sr.refuse(it.ID, fmt.Sprintf("refused by MongoDB (%s.%s): %v", tenant, it.Collection, out.Errs[i]))
				case batch.Halt:
					return fmt.Errorf("%w: %w", ErrFatal, out.Errs[i])
				default:
					lastErr = out.Errs[i]
					retry = append(retry, it)
				}
			}
		}
		pending = retry
	}
	return nil
}

// writeBackoff spaces the attempts of a replay write: 200ms doubling to 10s.
func writeBackoff() retry.Backoff {
	return retry.Backoff{Base: 200 * time.Millisecond, Max: 10 * time.Second}
}

// chunks groups items by collection, in order of first appearance, and
// splits each group so no insert carries more than maxBytes of documents.
func chunks(items []batch.Item, maxBytes int) [][]batch.Item {
	byColl := map[string][]batch.Item{}
	var order []string
	for _, it := range items {
		if _, ok := byColl[it.Collection]; !ok {
			order = append(order, it.Collection)
		}
		byColl[it.Collection] = append(byColl[it.Collection], it)
	}
	var out [][]batch.Item
	for _, c := range order {
		var cur []batch.Item
		size := 0
		for _, it := range byColl[c] {
			if len(cur) > 0 && size+len(it.Doc) > maxBytes {
				out = append(out, cur)
				cur, size = nil, 0
			}
			cur = append(cur, it)
			size += len(it.Doc)
		}
		if len(cur) > 0 {
			out = append(out, cur)
		}
	}
	return out
}

// limiter spaces pages so that no more than rate entries pass per second.
type limiter struct {
	rate  float64
	start time.Time
	n     int64
}

func (l *limiter) wait(ctx context.Context, n int) error {
	if l.rate <= 0 {
		return nil
	}
	now := time.Now()
	if l.start.IsZero() {
		l.start = now
	}
	due := l.start.Add(time.Duration(float64(l.n) / l.rate * float64(time.Second)))
	l.n += int64(n)
	return retry.Sleep(ctx, due.Sub(now))
}
