// Command persister-demo publishes Chronow-format entries (topic messages and
// a few dead letters) to Redis at a steady rate, to watch the persister work.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/publisher"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "persister-demo:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		redisURL = flag.String("redis-url", envOr("REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis URL")
		prefix   = flag.String("prefix", envOr("REDIS_KEY_PREFIX", "cw:"), "Chronow key prefix")
		tenants  = flag.String("tenants", "default", "comma-separated tenant ids")
		rate     = flag.Int("rate", 20, "messages per second")
		count    = flag.Int("count", 0, "stop after this many messages (0 = until interrupted)")
		single   = flag.Bool("single-prefix", false, "write the prefix once, like an app that leaves redis.keyPrefix unset (default: twice, like Chronow's configFromEnv)")
	)
	flag.Parse()
	if *rate <= 0 {
		return fmt.Errorf("-rate must be > 0, got %d", *rate)
	}
	opts, err := redis.ParseURL(*redisURL)
	if err != nil {
		return fmt.Errorf("-redis-url: %w", err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	pub := &publisher.Publisher{RDB: rdb, Prefix: *prefix, Doubled: !*single}
	ids := strings.Split(*tenants, ",")
	topics := []string{"orders", "payments", "emails"}
	tick := time.NewTicker(time.Second / time.Duration(*rate))
	defer tick.Stop()
	for i := 0; *count == 0 || i < *count; i++ {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		m := publisher.Message{
			Tenant: ids[i%len(ids)], Namespace: "default", Topic: topics[i%len(topics)],
			Payload: fmt.Sprintf(`{"seq":%d,"amount":%d,"currency":"EUR","at":%q}`, i, 1000+i, time.Now().UTC().Format(time.RFC3339Nano)),
			Headers: map[string]string{"source": "persister-demo"},
		}
		id, err := pub.Publish(ctx, m)
		if err != nil {
			fmt.Fprintln(os.Stderr, "publish:", err)
			continue
		}
		if i%10 == 4 { // a retry, as Chronow's nack({requeue: true}) adds it
			if _, err := pub.PublishRetry(ctx, publisher.Retry{Tenant: m.Tenant, Namespace: m.Namespace, Topic: m.Topic,
				RetryOf: id, Attempt: 1, Payload: m.Payload, Headers: m.Headers}); err != nil {
				fmt.Fprintln(os.Stderr, "retry:", err)
			}
		}
		if i%10 == 9 {
			_, err := pub.PublishDeadLetter(ctx, publisher.DeadLetter{
				Tenant: m.Tenant, Namespace: m.Namespace, Topic: m.Topic, OriginalMsgID: id,
				Payload: m.Payload, Headers: m.Headers, Reason: "demo: max deliveries", Deliveries: 5,
			})
			if err != nil {
				fmt.Fprintln(os.Stderr, "dead letter:", err)
			}
		}
		if i%100 == 99 {
			fmt.Printf("published %d messages\n", i+1)
		}
	}
	return nil
}

func envOr(k, def string) string {
	if v, ok := os.LookupEnv(k); ok {
		return v
	}
	return def
}
