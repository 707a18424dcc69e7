package replay

import (
	"fmt"
	"io"
	"time"
)

// meter prints progress: entries done, rate and ETA. On a terminal it
// rewrites one line a few times a second; otherwise it prints a plain line
// every plainEvery.
type meter struct {
	w      io.Writer
	tty    bool
	what   string
	total  int64
	done   int64
	start  time.Time
	last   time.Time
	stream string
	every  time.Duration
	drawn  bool
}

const (
	ttyEvery   = 250 * time.Millisecond
	plainEvery = 10 * time.Second
)

func newMeter(w io.Writer, tty bool, what string, total int64) *meter {
	every := plainEvery
	if tty {
		every = ttyEvery
	}
	now := time.Now()
	return &meter{w: w, tty: tty, what: what, total: total, start: now, last: now, every: every}
}

func (m *meter) add(n int, stream string) {
	m.done += int64(n)
	m.stream = stream
	if m.w == nil {
		return
	}
	if now := time.Now(); now.Sub(m.last) >= m.every {
		m.last = now
		m.print()
	}
}

// finish prints the last state (and ends the terminal line).
func (m *meter) finish() {
	if m.w == nil || (m.done == 0 && !m.drawn) {
		return
	}
	m.print()
	if m.tty {
		fmt.Fprintln(m.w)
	}
}

func (m *meter) print() {
	m.drawn = true
	line := m.line(time.Since(m.start))
	if m.tty {
		fmt.Fprintf(m.w, "\r\033[K%s", line)
		return
	}
	fmt.Fprintln(m.w, line)
}

func (m *meter) line(elapsed time.Duration) string {
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(m.done) / s
	}
	total := m.total
	if total < m.done {
		total = m.done
	}
	s := fmt.Sprintf("%s: %d", m.what, m.done)
	if total > 0 {
		s += fmt.Sprintf("/~%d entries (%.0f%%)", total, 100*float64(m.done)/float64(total))
	} else {
		s += " entries"
	}
	s += fmt.Sprintf(", %.0f/s", rate)
	if total > m.done && rate > 0 {
		eta := time.Duration(float64(total-m.done) / rate * float64(time.Second))
		s += ", ETA " + eta.Round(time.Second).String()
	}
	s += ", elapsed " + elapsed.Round(time.Second).String()
	if m.stream != "" {
		s += ", stream " + m.stream
	}
	return s
}
