package testenv_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/chronow/persister/internal/testenv"
)

// A TLS-only redis-server refuses plain and unverified clients and answers
// the PKI's client; a TLS cluster forms; FerretDB's TLS listener answers a
// client with the PKI's certificate in the URI.
func TestTLSServers(t *testing.T) {
	ctx := context.Background()
	pki := testenv.NewPKI(t)
	r := testenv.StartRedis(t, testenv.WithRedisTLS(pki, true))
	if err := r.Client(t).Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("TLS client: %v", err)
	}
	plain := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1})
	defer plain.Close()
	if err := plain.Ping(ctx).Err(); err == nil {
		t.Error("plain client answered by a TLS-only server")
	}
	other := testenv.NewPKI(t).ClientTLS()
	bad := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, TLSConfig: other})
	defer bad.Close()
	if err := bad.Ping(ctx).Err(); err == nil {
		t.Error("client trusting another CA verified the server")
	}

	c := testenv.StartCluster(t, 2, testenv.WithRedisTLS(pki, true))
	cc := c.Client(t)
	for _, k := range []string{"a", "b", "c", "d"} {
		if err := cc.Set(ctx, k, 1, 0).Err(); err != nil {
			t.Fatalf("cluster set %s: %v", k, err)
		}
	}

	m := testenv.StartMongo(t, testenv.WithMongoTLS(pki))
	if err := m.Client(t).Database("x").RunCommand(ctx, bson.D{{Key: "ping", Value: 1}}).Err(); err != nil {
		t.Fatalf("mongo over TLS: %v", err)
	}
}
