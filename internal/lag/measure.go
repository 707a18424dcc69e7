package lag

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

//go:embed measure.lua
var measureSrc string

// Status says what a measurement found at the key.
type Status int

// Statuses returned by the measure script.
const (
	// StatusOK means the stream and the group exist.
	StatusOK Status = 0
	// StatusGone means the key no longer holds a stream.
	StatusGone Status = 1
	// StatusNoGroup means the stream exists and the group does not yet:
	// every entry in it counts as lag.
	StatusNoGroup Status = 2
)

// Measurement is one stream's state for the group, taken atomically in Redis.
type Measurement struct {
	Stream  string
	Status  Status
	Lag     int64 // entries after the group's last-delivered-id
	Pending int64 // delivered, not acknowledged
	// Oldest is the id time of the oldest entry not yet acknowledged
	// (pending or undelivered); zero when there is none.
	Oldest time.Time
	// Lost is the number of entries found removed before the group saw
	// them, counted by this measurement (and by no other: the group's
	// counter was corrected in the same step).
	Lost int64
	// Now is the Redis server's clock at the measurement.
	Now           time.Time
	LastDelivered string
	NextID        string // first entry after LastDelivered, if any
	// Exact is false when Lag is Redis's own figure for a backlog larger
	// than the count cap.
	Exact bool
}

// Age is how old the oldest unacknowledged entry is by the Redis clock
// (0 when there is none, never negative).
func (m Measurement) Age() time.Duration {
	if m.Oldest.IsZero() || !m.Now.After(m.Oldest) {
		return 0
	}
	return m.Now.Sub(m.Oldest)
}

// Measurer runs the measure script on many streams in pipelined round trips.
type Measurer struct {
	rdb    redis.UniversalClient
	script *redis.Script
	group  string
	cap    int
	count  bool
}

// NewMeasurer returns a Measurer for group. countCap bounds how many entries
// are walked per stream to count its lag; countLost enables counting (and
// correcting) entries removed before the group saw them.
func NewMeasurer(rdb redis.UniversalClient, group string, countCap int, countLost bool) *Measurer {
	if countCap < 1 {
		countCap = 1
	}
	return &Measurer{rdb: rdb, script: redis.NewScript(measureSrc), group: group, cap: countCap, count: countLost}
}

// pipelineChunk bounds the commands sent in one pipeline.
const pipelineChunk = 256

// Measure measures every stream. The result has one entry per stream, in
// order; errs[i] is non-nil when stream i could not be measured. A cluster
// client splits each pipeline by slot.
func (ms *Measurer) Measure(ctx context.Context, streams []string) ([]Measurement, []error) {
	out := make([]Measurement, len(streams))
	errs := make([]error, len(streams))
	for start := 0; start < len(streams); start += pipelineChunk {
		end := min(start+pipelineChunk, len(streams))
		ms.measureChunk(ctx, streams[start:end], out[start:end], errs[start:end], true)
	}
	return out, errs
}

func (ms *Measurer) measureChunk(ctx context.Context, streams []string, out []Measurement, errs []error, reload bool) {
	flag := "0"
	if ms.count {
		flag = "1"
	}
	cmds := make([]*redis.Cmd, len(streams))
	_, _ = ms.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, s := range streams {
			cmds[i] = ms.script.EvalSha(ctx, p, []string{s}, ms.group, ms.cap, flag)
		}
		return nil
	})
	var again []int
	for i, c := range cmds {
		err := c.Err()
		if reload && redis.HasErrorPrefix(err, "NOSCRIPT") {
			again = append(again, i)
			continue
		}
		if err != nil {
			errs[i] = fmt.Errorf("measure %s: %w", streams[i], err)
			continue
		}
		out[i], errs[i] = parse(streams[i], c.Val())
	}
	if len(again) == 0 {
		return
	}
	// Redis restarted, failed over or flushed its scripts: load and retry.
	if err := ms.script.Load(ctx, ms.rdb).Err(); err != nil {
		for _, i := range again {
			errs[i] = fmt.Errorf("measure %s: load script: %w", streams[i], err)
		}
		return
	}
	sub := make([]string, len(again))
	for j, i := range again {
		sub[j] = streams[i]
	}
	subOut := make([]Measurement, len(again))
	subErr := make([]error, len(again))
	ms.measureChunk(ctx, sub, subOut, subErr, false)
	for j, i := range again {
		out[i], errs[i] = subOut[j], subErr[j]
	}
}

var errReply = errors.New("unexpected reply from the measure script")

func parse(stream string, v any) (Measurement, error) {
	a, ok := v.([]any)
	if !ok || len(a) != 9 {
		return Measurement{}, fmt.Errorf("measure %s: %w: %v", stream, errReply, v)
	}
	ints := make([]int64, 0, 6)
	for _, i := range []int{0, 1, 2, 3, 4, 5, 8} {
		n, ok := a[i].(int64)
		if !ok {
			return Measurement{}, fmt.Errorf("measure %s: %w: element %d is %T", stream, errReply, i, a[i])
		}
		ints = append(ints, n)
	}
	gid, _ := a[6].(string)
	next, _ := a[7].(string)
	m := Measurement{
		Stream: stream, Status: Status(ints[0]), Lag: ints[1], Pending: ints[2], Lost: ints[4],
		Now: time.UnixMilli(ints[5]), LastDelivered: gid, NextID: next, Exact: ints[6] == 1,
	}
	if ints[3] >= 0 {
		m.Oldest = time.UnixMilli(ints[3])
	}
	return m, nil
}
