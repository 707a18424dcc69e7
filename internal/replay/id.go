package replay

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ID is a stream entry id, ms-seq.
type ID struct {
	Ms, Seq uint64
}

// MinID and MaxID bound every stream.
var (
	MinID = ID{}
	MaxID = ID{Ms: math.MaxUint64, Seq: math.MaxUint64}
)

// ErrBadBound is wrapped by ParseBound errors.
var ErrBadBound = errors.New("not a stream id (ms or ms-seq) or an RFC 3339 time")

// ParseID parses a complete stream id "ms-seq" as Redis returns it.
func ParseID(s string) (ID, error) {
	msPart, seqPart, ok := strings.Cut(s, "-")
	if !ok {
		return ID{}, fmt.Errorf("stream id %q: want ms-seq", s)
	}
	ms, err1 := strconv.ParseUint(msPart, 10, 64)
	seq, err2 := strconv.ParseUint(seqPart, 10, 64)
	if err1 != nil || err2 != nil {
		return ID{}, fmt.Errorf("stream id %q: want ms-seq (two decimal numbers)", s)
	}
	return ID{Ms: ms, Seq: seq}, nil
}

// String formats the id as Redis does.
func (id ID) String() string {
	return strconv.FormatUint(id.Ms, 10) + "-" + strconv.FormatUint(id.Seq, 10)
}

// Less reports whether id sorts before o.
func (id ID) Less(o ID) bool {
	return id.Ms < o.Ms || (id.Ms == o.Ms && id.Seq < o.Seq)
}

// Next returns the smallest id after id (MaxID stays MaxID).
func (id ID) Next() ID {
	switch {
	case id == MaxID:
		return MaxID
	case id.Seq < math.MaxUint64:
		return ID{Ms: id.Ms, Seq: id.Seq + 1}
	default:
		return ID{Ms: id.Ms + 1}
	}
}

// Range is an inclusive range of stream ids.
type Range struct {
	From, To ID
}

// All is the range of every id.
var All = Range{From: MinID, To: MaxID}

// Contains reports whether id lies in the range.
func (r Range) Contains(id ID) bool {
	return !id.Less(r.From) && !r.To.Less(id)
}

// Bounded reports whether the range excludes anything.
func (r Range) Bounded() bool { return r != All }

// start and end are the XRANGE arguments.
func (r Range) start() string {
	if r.From == MinID {
		return "-"
	}
	return r.From.String()
}

func (r Range) end() string {
	if r.To == MaxID {
		return "+"
	}
	return r.To.String()
}

// String describes the range for reports.
func (r Range) String() string { return "[" + r.start() + ", " + r.end() + "]" }

// ParseBound parses a --from (end=false) or --to (end=true) value: empty,
// "-" or "+" (unbounded), a stream id "ms-seq", a bare millisecond time "ms"
// (the whole millisecond), or an RFC 3339 time (millisecond precision; a
// --to time includes its whole millisecond).
func ParseBound(s string, end bool) (ID, error) {
	switch s {
	case "", "-", "+":
		if end {
			return MaxID, nil
		}
		return MinID, nil
	}
	if id, err := ParseID(s); err == nil {
		return id, nil
	}
	if ms, err := strconv.ParseUint(s, 10, 64); err == nil {
		if end {
			return ID{Ms: ms, Seq: math.MaxUint64}, nil
		}
		return ID{Ms: ms}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return ID{}, fmt.Errorf("%q: %w", s, ErrBadBound)
	}
	if t.UnixMilli() < 0 {
		return ID{}, fmt.Errorf("%q: before 1970: %w", s, ErrBadBound)
	}
	ms := uint64(t.UnixMilli())
	if end {
		return ID{Ms: ms, Seq: math.MaxUint64}, nil
	}
	// An entry of the same millisecond but before a sub-millisecond time
	// cannot be told apart; the whole millisecond is included.
	return ID{Ms: ms}, nil
}

// msTime returns the time of a millisecond id part.
func msTime(ms uint64) time.Time {
	if ms > math.MaxInt64 {
		ms = math.MaxInt64
	}
	return time.UnixMilli(int64(ms)).UTC()
}
