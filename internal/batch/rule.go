package batch

import (
	"context"
	"errors"
	"time"

	"github.com/chronow/persister/internal/sink"
)

// Decision is what the write rule decided for one item of an insert.
type Decision uint8

// The decisions, for one item.
const (
	// Inserted: the document was written.
	Inserted Decision = iota + 1
	// Present: the document was there already (duplicate key: its _id is
	// deterministic, so a redelivery): stored.
	Present
	// Retry: not written, may succeed later (retryable, or the whole
	// insert's outcome is unknown).
	Retry
	// Rescued: refused for good; Outcome.Replacements holds the item that
	// stands in for it (a stub or a dead letter of the same entry).
	Rescued
	// Refused: refused for good and not rescued.
	Refused
	// Halt: nothing of the tenant can be written until an operator acts
	// (authentication, authorization, a conflicting index).
	Halt
)

// MaxRescues bounds the rescues of one entry: a replacement that is
// refused again is rescued once more (a smaller stub), then given up.
const MaxRescues = 2

// Outcome is the write rule's answer for one insert.
type Outcome struct {
	// Decisions has one decision per item, in order.
	Decisions []Decision
	// Replacements holds, at the index of each Rescued item, its
	// replacement (same entry: stream, id, kind, time, hold).
	Replacements []Item
	// Errs holds the server's error of each item that has one.
	Errs []error
	// Err is the error of the whole insert (every item Retry or Halt).
	Err error
}

// Insert is the one write rule of the persister, used by the batcher, by
// replay and for dead letters: insert the items' documents (all of one
// collection) in one unordered bulk insert bounded by timeout, and decide
// for each item from the server's answer: inserted or present (stored),
// retry, rescued (with rescuer, at most MaxRescues times per entry),
// refused, or halt. Retrying, with retry.Backoff, is the caller's.
func Insert(ctx context.Context, s Sink, tenant, coll string, items []Item, rescuer Rescuer, timeout time.Duration) Outcome {
	docs := make([][]byte, len(items))
	for i, it := range items {
		docs[i] = it.Doc
	}
	out := Outcome{Decisions: make([]Decision, len(items)), Errs: make([]error, len(items))}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	results, err := s.Insert(wctx, tenant, coll, docs)
	cancel()
	if err != nil {
		d := Retry
		if sink.Classify(err) == sink.ClassFatal || errors.Is(err, sink.ErrLegacyIndex) || errors.Is(err, sink.ErrUnknownTenant) {
			d = Halt
		}
		for i := range out.Decisions {
			out.Decisions[i], out.Errs[i] = d, err
		}
		out.Err = err
		return out
	}
	for i, r := range results {
		out.Errs[i] = r.Err
		switch r.Class {
		case sink.ClassNone:
			out.Decisions[i] = Inserted
		case sink.ClassDuplicate:
			out.Decisions[i] = Present
		case sink.ClassPermanent:
			rep, ok := rescue(ctx, rescuer, items[i], r.Err)
			if !ok {
				out.Decisions[i] = Refused
				continue
			}
			if out.Replacements == nil {
				out.Replacements = make([]Item, len(items))
			}
			out.Decisions[i], out.Replacements[i] = Rescued, rep
		case sink.ClassFatal:
			out.Decisions[i] = Halt
		default:
			out.Decisions[i] = Retry
		}
	}
	return out
}

// rescue asks the rescuer for a replacement of a refused item; the
// replacement carries the entry's identity and hold.
func rescue(ctx context.Context, r Rescuer, it Item, cause error) (Item, bool) {
	if r == nil || it.Attempts >= MaxRescues {
		return Item{}, false
	}
	rep, ok := r.Rescue(ctx, it, cause)
	if !ok {
		return Item{}, false
	}
	rep.Stream, rep.ID, rep.Kind, rep.Hold = it.Stream, it.ID, it.Kind, it.Hold
	if rep.Time.IsZero() {
		rep.Time = it.Time
	}
	rep.Attempts = it.Attempts + 1
	return rep, true
}
