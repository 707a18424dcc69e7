package entry

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/publisher"
)

// deadLetter returns the key and fields of a dead-letter entry as Chronow
// writes it (publisher).
func deadLetter(t *testing.T) (keyspace.Key, map[string]any) {
	d := publisher.DeadLetter{
		Tenant: "acme", Namespace: "pay", Topic: "orders:eu", OriginalMsgID: "1732561200123-0",
		Payload: `{"amount":9007199254740993}`, Headers: map[string]string{"traceId": "t-1"},
		Reason: "max deliveries", Deliveries: 5, FailedAt: time.Now(),
	}
	key, err := keyspace.Layout{Prefix: "cw:"}.Parse(d.Key("cw:"))
	if err != nil {
		t.Fatal(err)
	}
	kv := d.Values()
	m := map[string]any{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return key, m
}

func TestDeadLetterDecoder(t *testing.T) {
	dlqKey, values := deadLetter(t)
	it, defects, err := DeadLetter{}.Decode(dlqKey, redis.XMessage{ID: "5-0", Values: values}, time.Now())
	if err != nil || len(defects) != 0 {
		t.Fatalf("Decode: %v %v", defects, err)
	}
	if it.Collection != config.CollDeadLetters || it.Stream != dlqKey.String() || it.ID != "5-0" || it.Kind != "dlq" {
		t.Errorf("item: got %+v", it)
	}
	if !it.Time.Equal(time.UnixMilli(5)) {
		t.Errorf("time: got %v", it.Time)
	}
	if _, _, err := (DeadLetter{}).Decode(dlqKey, redis.XMessage{ID: "bad", Values: values}, time.Now()); err == nil {
		t.Error("bad id: want an error")
	}
}
