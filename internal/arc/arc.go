// Package arc is adaptive request concurrency for bulk writes: a limiter
// that lets at most Limit() writes run at once and moves that limit with
// what it measures, in the spirit of TCP congestion control (Vegas, AIMD)
// and Vector's adaptive request concurrency.
//
// Every write reports its duration, its document count and its error. The
// limiter keeps a latency floor per batch-size class (the fastest write of
// that size seen recently), and judges each write by its duration over the
// floor of its class, so a small batch is never compared with a full one.
// From a window's writes it estimates, as TCP Vegas does, how many of them
// queued at the server: writes in flight × (1 − floor / latency). It
// raises the limit by one while less than one write queued and the limit
// is in use, and keeps a raise while throughput grows (or latency stays
// where it was); it lowers the limit multiplicatively when more than three
// writes queued, at once when one write is far above its floor (a stalled
// server) or fails; and it keeps the limit within [1, Max]. docs/performance.md describes the algorithm and its settings.
package arc

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// Config tunes a Limiter. Zero fields take the defaults of Defaults.
type Config struct {
	// Max is the highest limit (PERSISTER_MAX_CONCURRENT_WRITES).
	Max int
	// Initial is the starting limit (default 1, at most Max): the floors
	// are learnt from writes that do not queue behind each other.
	Initial int
	// Fixed keeps the limit at Max: no adaptation (today's behaviour of
	// PERSISTER_WRITE_CONCURRENCY=fixed), measurements are still taken.
	Fixed bool
	// Tolerance: a window whose writes queued more than Tolerance writes
	// at the server is congested; the limit is lowered (default 3). The
	// queue is TCP Vegas' estimate: writes in flight × (1 − floor /
	// latency), with the window's median write latency over its floor.
	Tolerance float64
	// Headroom: the limit is raised only while fewer than Headroom
	// writes queued at the server (default 1).
	Headroom float64
	// Severe: a single write over Severe × its floor that took at least
	// StallMin (default 1s), or a failed one, lowers the limit at once,
	// once per decrease (default 8): a stalled server, not the jitter of
	// a small write.
	Severe   float64
	StallMin time.Duration
	// Decrease is the factor of a decrease for latency (default 0.7);
	// errors and severe writes use ErrDecrease (default 0.5).
	Decrease, ErrDecrease float64
	// Gain: after a raise, throughput must grow by this fraction, or the
	// writes' median latency over their floor stay within LatencyGain of
	// what it was, or the raise is undone (defaults 0.05 and 0.5): more
	// writes in flight must buy throughput, or at least cost the server
	// nothing (a load the server keeps up with, where they cut the wait
	// for a slot).
	Gain, LatencyGain float64
	// FloorWindow is how long a floor is remembered (default 2m): the
	// floor is the fastest write of the last FloorWindow to 2×FloorWindow.
	// Under a steady backlog writes queue at the server, and a floor
	// learnt only from them would hide that queue: it must outlive the
	// writes made at a low limit.
	FloorWindow time.Duration
	// MinWindow is the fewest writes of a window (default 4); a window
	// also counts at least 2 × the limit writes, and lasts at least
	// MinWindowTime (default 500ms): throughput is compared between
	// windows, which must not be too short to say.
	MinWindow     int
	MinWindowTime time.Duration
	// Now is the clock (tests pass a fake one).
	Now func() time.Time
	// OnChange, when set, is called with the new limit and the reason of
	// every change (Reason*), under the limiter's lock: keep it short.
	OnChange func(limit int, reason string)
}

// Reasons of a change of the limit.
const (
	ReasonRaise   = "raise"         // writes near their floor, limit in use
	ReasonUndo    = "undo"          // the last raise did not raise throughput
	ReasonLatency = "latency"       // a window's writes queued more than Tolerance at the server
	ReasonStall   = "stalled write" // one write above Severe × floor
	ReasonError   = "error"         // a write failed
)

// Defaults fills the zero fields of c.
func (c Config) Defaults() Config {
	c.Max = max(c.Max, 1)
	if c.Initial <= 0 {
		c.Initial = 1
	}
	c.Initial = min(c.Initial, c.Max)
	def := func(v *float64, d float64) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.Tolerance, 3)
	def(&c.Headroom, 1)
	def(&c.Severe, 8)
	def(&c.Decrease, 0.7)
	def(&c.ErrDecrease, 0.5)
	def(&c.Gain, 0.05)
	def(&c.LatencyGain, 0.5)
	if c.StallMin <= 0 {
		c.StallMin = time.Second
	}
	if c.FloorWindow <= 0 {
		c.FloorWindow = 2 * time.Minute
	}
	if c.MinWindow <= 0 {
		c.MinWindow = 4
	}
	if c.MinWindowTime <= 0 {
		c.MinWindowTime = 500 * time.Millisecond
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// classes of batch sizes: class k holds writes of [2^(k/4), 2^((k+1)/4))
// documents, a quarter of an octave: sizes within a class differ by 19%
// at most.
const classes = 4 * 18

// class returns the size class of a write of docs documents.
func class(docs int) int {
	return min(int(4*math.Log2(float64(max(docs, 1)))), classes-1)
}

// Limiter bounds the writes in flight. Its methods are safe for concurrent
// use.
type Limiter struct {
	cfg Config

	mu       sync.Mutex
	limit    int
	inflight int
	waiters  []chan struct{} // FIFO; a closed channel is a granted slot
	epoch    int             // decreases so far; a write started before the last one cannot cause another
	floors   [classes]floor
	win      window
	ctl      control
}

// floor is the fastest write of one size class over the last one to two
// FloorWindows: the minimum of the current and the previous period, per
// write and per document. A write is judged by the geometric mean of its
// ratios to both: per write is exact where a write's fixed cost
// dominates (small batches), per document where its cost grows with its
// size (large ones); the mean is within 9% of either within a class.
type floor struct {
	perDoc, write minPair
	since         time.Time // start of the current period
}

// minPair is the minimum of the current and of the previous period.
type minPair struct{ cur, prev time.Duration } // 0: none

func (m *minPair) add(d time.Duration) {
	if m.cur == 0 || d < m.cur {
		m.cur = d
	}
}

func (m minPair) min() time.Duration {
	switch {
	case m.cur == 0:
		return m.prev
	case m.prev == 0:
		return m.cur
	default:
		return min(m.cur, m.prev)
	}
}

// window gathers the writes between two decisions.
type window struct {
	start     time.Time
	ratios    []float64 // duration / floor of each write
	docs      int
	saturated bool // the limit was in use (all slots taken) at some point
	peak      int  // most writes in flight at once
}

// control is the state of the raise-and-check probe.
type control struct {
	probing  bool    // the last change was a raise, not yet confirmed
	settling bool    // the window after a raise: writes of the old limit end in it, it is not judged
	base     float64 // throughput (docs/s) before that raise
	baseLat  float64 // the median write over its floor before that raise
	hold     int     // windows to wait before the next raise
	cooldown int     // hold after the next failed raise
}

// New returns a limiter at cfg.Initial (cfg.Max when Fixed).
func New(cfg Config) *Limiter {
	cfg = cfg.Defaults()
	l := &Limiter{cfg: cfg, limit: cfg.Initial}
	if cfg.Fixed {
		l.limit = cfg.Max
	}
	l.win.start = cfg.Now()
	l.ctl.cooldown = 2
	return l
}

// Token is a slot taken by Acquire; give it back with Release.
type Token struct {
	epoch int
}

// Acquire waits, in arrival order, until fewer than Limit() writes are in
// flight and takes a slot. It fails only when ctx ends first.
func (l *Limiter) Acquire(ctx context.Context) (Token, error) {
	l.mu.Lock()
	if len(l.waiters) == 0 && l.inflight < l.limit {
		t := l.grantLocked()
		l.mu.Unlock()
		return t, nil
	}
	ch := make(chan struct{})
	l.waiters = append(l.waiters, ch)
	l.win.saturated = true
	l.mu.Unlock()
	select {
	case <-ch:
		l.mu.Lock()
		defer l.mu.Unlock()
		return Token{epoch: l.epoch}, nil
	case <-ctx.Done():
		l.mu.Lock()
		defer l.mu.Unlock()
		if i := slices.Index(l.waiters, ch); i >= 0 {
			l.waiters = slices.Delete(l.waiters, i, i+1)
			return Token{}, fmt.Errorf("wait for a write slot: %w", ctx.Err())
		}
		// Granted meanwhile: hand the slot on.
		l.inflight--
		l.wakeLocked()
		return Token{}, fmt.Errorf("wait for a write slot: %w", ctx.Err())
	}
}

func (l *Limiter) grantLocked() Token {
	l.inflight++
	l.win.peak = max(l.win.peak, l.inflight)
	if l.inflight >= l.limit {
		l.win.saturated = true
	}
	return Token{epoch: l.epoch}
}

// wakeLocked grants slots to waiters while the limit allows.
func (l *Limiter) wakeLocked() {
	for len(l.waiters) > 0 && l.inflight < l.limit {
		ch := l.waiters[0]
		l.waiters = l.waiters[1:]
		l.grantLocked()
		close(ch)
	}
}

// Release gives a slot back with what the write measured: its duration
// (the write only, not the wait for a slot), its documents and its error.
// docs == 0 means the slot was not used for a write: nothing is measured.
// A context.Canceled error (the process stopping) is not a measurement.
func (l *Limiter) Release(t Token, elapsed time.Duration, docs int, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inflight--
	defer l.wakeLocked()
	if docs <= 0 || errors.Is(err, context.Canceled) {
		return
	}
	now := l.cfg.Now()
	if err != nil {
		if t.epoch == l.epoch {
			l.decreaseLocked(now, l.cfg.ErrDecrease, ReasonError)
		}
		return
	}
	ratio := l.sampleLocked(now, elapsed, docs)
	if ratio > l.cfg.Severe && elapsed >= l.cfg.StallMin && t.epoch == l.epoch {
		l.decreaseLocked(now, l.cfg.ErrDecrease, ReasonStall)
		return
	}
	l.win.ratios = append(l.win.ratios, ratio)
	l.win.docs += docs
	if len(l.win.ratios) >= max(l.cfg.MinWindow, 2*l.limit) && now.Sub(l.win.start) >= l.cfg.MinWindowTime {
		l.decideLocked(now)
	}
}

// sampleLocked updates the floor of the write's size class and returns
// the write's duration over that floor (1 when the class had none).
func (l *Limiter) sampleLocked(now time.Time, elapsed time.Duration, docs int) float64 {
	elapsed = max(elapsed, time.Microsecond)
	perDoc := max(elapsed/time.Duration(docs), time.Nanosecond)
	f := &l.floors[class(docs)]
	if f.since.IsZero() || now.Sub(f.since) >= l.cfg.FloorWindow {
		if now.Sub(f.since) >= 2*l.cfg.FloorWindow {
			f.perDoc.cur, f.write.cur = 0, 0
		}
		f.perDoc = minPair{prev: f.perDoc.cur}
		f.write = minPair{prev: f.write.cur}
		f.since = now
	}
	baseDoc, baseWrite := f.perDoc.min(), f.write.min()
	f.perDoc.add(perDoc)
	f.write.add(elapsed)
	if baseDoc == 0 || baseWrite == 0 {
		return 1
	}
	return math.Sqrt(float64(perDoc) / float64(baseDoc) * float64(elapsed) / float64(baseWrite))
}

// decideLocked ends a window: lower the limit when its writes queued
// more than Tolerance at the server; undo a raise that bought no
// throughput and slowed the writes; raise it when the limit was in use
// and less than Headroom writes queued.
func (l *Limiter) decideLocked(now time.Time) {
	w := l.win
	l.win = window{start: now, peak: l.inflight}
	if l.cfg.Fixed {
		return
	}
	slices.Sort(w.ratios)
	median := w.ratios[len(w.ratios)/2]
	queued := float64(w.peak) * (1 - 1/max(median, 1))
	secs := now.Sub(w.start).Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(w.docs) / secs
	}
	c := &l.ctl
	switch {
	case queued > l.cfg.Tolerance:
		l.decreaseLocked(now, l.cfg.Decrease, ReasonLatency)
		return
	case c.settling:
		c.settling = false
		return
	case c.probing && w.saturated:
		c.probing = false
		if rate < c.base*(1+l.cfg.Gain) && median > c.baseLat*(1+l.cfg.LatencyGain) {
			// The raise bought no throughput and slowed the writes:
			// undo it, wait longer next time.
			l.setLimitLocked(l.limit-1, ReasonUndo)
			c.hold, c.cooldown = c.cooldown, min(2*c.cooldown, 64)
			return
		}
		c.cooldown = 2
	case c.probing:
		c.probing = false // the raise was not used: judge it next time
		return
	}
	if c.hold > 0 {
		c.hold--
		return
	}
	if w.saturated && queued < l.cfg.Headroom && l.limit < l.cfg.Max {
		c.probing, c.settling, c.base, c.baseLat = true, true, rate, median
		l.setLimitLocked(l.limit+1, ReasonRaise)
	}
}

// decreaseLocked multiplies the limit by factor (at least 1 lower, at
// least 1) and starts a new epoch and window.
func (l *Limiter) decreaseLocked(now time.Time, factor float64, reason string) {
	l.epoch++
	l.win = window{start: now, peak: l.inflight}
	l.ctl.probing, l.ctl.settling = false, false
	l.ctl.hold = 1
	if l.cfg.Fixed {
		return
	}
	l.setLimitLocked(min(l.limit-1, int(math.Floor(float64(l.limit)*factor))), reason)
}

func (l *Limiter) setLimitLocked(n int, reason string) {
	n = min(max(n, 1), l.cfg.Max)
	if n != l.limit && l.cfg.OnChange != nil {
		l.cfg.OnChange(n, reason)
	}
	l.limit = n
}

// Limit returns the current limit.
func (l *Limiter) Limit() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.limit
}

// InFlight returns the writes in flight.
func (l *Limiter) InFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inflight
}

// Floor returns the latency floor of the largest batch-size class seen
// (full batches under a backlog), 0 before any write.
func (l *Limiter) Floor() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := classes - 1; i >= 0; i-- {
		if f := l.floors[i].write.min(); f > 0 {
			return f
		}
	}
	return 0
}
