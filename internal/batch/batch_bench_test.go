package batch

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chronow/persister/internal/sink"
	"github.com/chronow/persister/internal/testenv"
	"github.com/chronow/persister/metrics"
)

// nullSink stores everything at once.
type nullSink struct{}

func (nullSink) Insert(_ context.Context, _, _ string, docs [][]byte) ([]sink.Result, error) {
	return make([]sink.Result, len(docs)), nil
}

// countAcker counts acknowledged ids.
type countAcker struct{ n chan int }

func (a countAcker) Ack(_ context.Context, ids map[string][]string) error {
	n := 0
	for _, l := range ids {
		n += len(l)
	}
	a.n <- n
	return nil
}

func (a countAcker) AckEach(ctx context.Context, stream string, ids []string) ([]bool, error) {
	return allAcked(ids), a.Ack(ctx, map[string][]string{stream: ids})
}

// BenchmarkBatcher1KB is the batcher's own cost per entry (channel, batching,
// metrics, grouping acks by stream) with a sink and an acker that cost
// nothing: 1 KB documents over 40 streams, batches of 500, 2 in flight.
func BenchmarkBatcher1KB(b *testing.B) {
	m := metrics.New(prometheus.NewRegistry(), "bench")
	acks := countAcker{n: make(chan int, 1024)}
	bt := New(Config{Tenant: "t00", MaxItems: 500, MaxBytes: 8 << 20, Linger: 20 * time.Millisecond,
		Inflight: 2, WriteTimeout: time.Second}, nullSink{}, acks, nil, m, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	done := make(chan error, 1)
	go func() { done <- bt.Run(ctx) }()
	doc := make([]byte, 1400)
	streams := make([]string, 40)
	for i := range streams {
		streams[i] = "cw:t00:ns0:topic:topic-" + strconv.Itoa(i)
	}
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := testenv.CPUTime()
	for i := range b.N {
		it := Item{Stream: streams[i%len(streams)], ID: "1732561200123-" + strconv.Itoa(i), Kind: "topic",
			Collection: "messages", Doc: doc, Time: now}
		if err := bt.Add(ctx, it); err != nil {
			b.Fatal(err)
		}
		// Drain ack counts as they come, so the acker never blocks.
		select {
		case <-acks.n:
		default:
		}
	}
	bt.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	testenv.ReportCPUPerOp(b, cpu0)
}
