package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// Counts keeps the counters C of a persister process that is stopped and
// started again, read from its /metrics: the counters of ended incarnations
// add up in base, the current incarnation's latest scrape is last (a kill
// loses what happened since the last scrape).
type Counts[C any] struct {
	addr   string
	client *http.Client
	parse  func(body string) (C, error)
	plus   func(a, b C) C

	mu          sync.Mutex
	incarnation int
	up          bool
	base, last  C
}

// NewCounts returns the Counts of the process serving /metrics on addr:
// each request is bounded by timeout, parse reads C from the body and plus
// adds two C.
func NewCounts[C any](addr string, timeout time.Duration, parse func(body string) (C, error), plus func(a, b C) C) *Counts[C] {
	return &Counts[C]{addr: addr, client: &http.Client{Timeout: timeout}, parse: parse, plus: plus}
}

// Started counts a new incarnation, from zero; the one before (if any)
// moves to base.
func (c *Counts[C]) Started() {
	c.mu.Lock()
	defer c.mu.Unlock()
	var zero C
	c.base, c.last = c.plus(c.base, c.last), zero
	c.incarnation++
	c.up = true
}

// Stopped ends the incarnation: Refresh no longer scrapes, and a scrape
// under way when it is called is dropped.
func (c *Counts[C]) Stopped() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.up = false
}

// Refresh scrapes /metrics into last, if the incarnation is up and answers.
func (c *Counts[C]) Refresh() {
	c.mu.Lock()
	inc, up := c.incarnation, c.up
	c.mu.Unlock()
	if !up {
		return
	}
	v, err := c.scrape()
	if err != nil {
		return
	}
	c.mu.Lock()
	if c.incarnation == inc && c.up {
		c.last = v
	}
	c.mu.Unlock()
}

// Totals returns base plus last: every incarnation's counters, as last
// scraped.
func (c *Counts[C]) Totals() C {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.plus(c.base, c.last)
}

// Get GETs path from the process and returns the status code and the body.
func (c *Counts[C]) Get(ctx context.Context, path string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.addr+path, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func (c *Counts[C]) scrape() (C, error) {
	var zero C
	code, body, err := c.Get(context.Background(), "/metrics")
	if err != nil {
		return zero, err
	}
	if code != http.StatusOK {
		return zero, fmt.Errorf("metrics: status %d", code)
	}
	return c.parse(body)
}

// Every calls f every interval until ctx is done, and returns then.
func Every(ctx context.Context, interval time.Duration, f func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f()
	}
}
