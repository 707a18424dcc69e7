package hold

import (
	"context"
	"fmt"
)

// Acker sends XACK to Redis (consumer.Acker).
type Acker interface {
	// Ack acknowledges every stream's ids, one XACK per stream.
	Ack(ctx context.Context, ids map[string][]string) error
	// AckEach acknowledges ids of stream with one XACK each and reports
	// which ones this call acknowledged (XACK answered 1).
	AckEach(ctx context.Context, stream string, ids []string) ([]bool, error)
}

// Out is an entry leaving its tenant pipeline: the stream it was read
// from, its id, and its hold (the zero Hold for an entry that was never in
// hand: one trimmed while pending, or dead-lettered as poison before it
// was taken).
type Out struct {
	Stream, ID string
	Hold       Hold
}

// Way is how entries leave.
type Way int

// The ways out.
const (
	// GivenUp: not acknowledged; the entry stays pending in Redis and is
	// read again (a stop before it was stored, an ack that failed).
	GivenUp Way = iota
	// Acked: stored (inserted, duplicate, rescued) or dead-lettered;
	// one XACK per stream.
	Acked
	// AckedEach: decided while another consumer may have acknowledged
	// some of them meanwhile (trimmed while pending); one XACK per entry,
	// and Leave reports which ones this call acknowledged.
	AckedEach
)

// Leave is the one way an entry leaves a tenant pipeline, whichever path
// it took: the batcher (stored, duplicate, rescued, or given up at a
// stop), poison handling (dead-lettered) and the trimmed entries' decision
// all end here. With Acked or AckedEach it sends the XACKs; then it lets
// go of every entry's hold (Hold.Done: its memory budget share, its
// in-flight count, and its in-hand record when acknowledged). Holds are
// let go even when the XACK fails (the entries stay pending in Redis and
// are read again). With AckedEach it returns, per entry, whether this
// call acknowledged it.
func Leave(ctx context.Context, a Acker, outs []Out, way Way) ([]bool, error) {
	var (
		each []bool
		err  error
	)
	switch way {
	case Acked:
		ids := map[string][]string{}
		for _, o := range outs {
			ids[o.Stream] = append(ids[o.Stream], o.ID)
		}
		if len(ids) > 0 {
			err = a.Ack(ctx, ids)
		}
	case AckedEach:
		each, err = ackEach(ctx, a, outs)
	}
	acked := way != GivenUp && err == nil
	for _, o := range outs {
		o.Hold.Done(acked)
	}
	return each, err
}

// ackEach sends one XACK per entry, one pipeline per stream, and returns
// the answers in the order of outs.
func ackEach(ctx context.Context, a Acker, outs []Out) ([]bool, error) {
	each := make([]bool, len(outs))
	at := map[string][]int{} // stream -> indexes into outs
	var order []string
	for i, o := range outs {
		if _, ok := at[o.Stream]; !ok {
			order = append(order, o.Stream)
		}
		at[o.Stream] = append(at[o.Stream], i)
	}
	for _, stream := range order {
		ids := make([]string, len(at[stream]))
		for j, i := range at[stream] {
			ids[j] = outs[i].ID
		}
		got, err := a.AckEach(ctx, stream, ids)
		if err != nil {
			return nil, fmt.Errorf("ack %d entries of %s: %w", len(ids), stream, err)
		}
		for j, i := range at[stream] {
			each[i] = j < len(got) && got[j]
		}
	}
	return each, nil
}
