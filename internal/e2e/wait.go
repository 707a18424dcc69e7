package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/mongo"
)

// WaitStored waits up to timeout until every entry of l is stored exactly
// once in its tenant's database, and fails the test if none of the checks
// find it so.
func WaitStored(ctx context.Context, t testing.TB, mc *mongo.Client, l *Ledger, tenants []string, timeout time.Duration) {
	t.Helper()
	Eventually(t, timeout, "every entry stored exactly once", func() (bool, string) {
		rep := Verify(ctx, t, mc, l, tenants)
		return rep.OK(), rep.String()
	})
}

// WaitNothingPending waits up to timeout until group has no pending entry
// on streams.
func WaitNothingPending(ctx context.Context, t testing.TB, rdb redis.UniversalClient, group string, streams []string, timeout time.Duration) {
	t.Helper()
	Eventually(t, timeout, "nothing pending in the group", func() (bool, string) {
		n, err := Pending(ctx, rdb, group, streams)
		return err == nil && n == 0, fmt.Sprintf("pending %d, err %v", n, err)
	})
}
