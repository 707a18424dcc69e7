// Package consumer reads Chronow streams through the persister's consumer
// group: it creates the group, drains this consumer's pending entries, reads
// new ones and acknowledges stored ones.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// ErrStreamGone is returned when a stream no longer exists.
var ErrStreamGone = errors.New("stream does not exist")

// EnsureGroup creates group on stream at id 0, so the backlog Redis still
// holds is read too. An existing group is fine. A missing stream is not
// created (it may have been deleted on purpose); ErrStreamGone is returned.
func EnsureGroup(ctx context.Context, rdb redis.Cmdable, stream, group string) error {
	err := rdb.XGroupCreate(ctx, stream, group, "0").Err()
	switch {
	case err == nil, redis.HasErrorPrefix(err, "BUSYGROUP"):
		return nil
	case isNoKey(err):
		return fmt.Errorf("create group %q on %q: %w", group, stream, ErrStreamGone)
	default:
		return fmt.Errorf("create group %q on %q: %w", group, stream, err)
	}
}

func isNoKey(err error) bool {
	return err != nil && strings.Contains(err.Error(), "requires the key to exist")
}

// IsNoGroup reports whether err says a stream or its group is missing.
func IsNoGroup(err error) bool {
	return redis.HasErrorPrefix(err, "NOGROUP")
}
