package sharedmem

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// notifyParam is the Redis setting that turns keyspace notifications on.
const notifyParam = "notify-keyspace-events"

// requiredFlags returns the notify-keyspace-events classes the live path
// needs: K (keyspace channels) and $ (string commands: SET and friends), and
// g (generic commands: DEL, UNLINK, RENAME) when deletes become tombstones.
// Expiry (x) is never needed: it changes nothing in the warm tier.
func requiredFlags(tombstone bool) string {
	if tombstone {
		return "K$g"
	}
	return "K$"
}

// missingFlags returns the flags of required that current lacks. 'A' in
// current stands for "g$lshzxetd".
func missingFlags(current, required string) string {
	have := current
	if strings.Contains(current, "A") {
		have += "g$lshzxetd"
	}
	var miss strings.Builder
	for _, f := range required {
		if !strings.ContainsRune(have, f) {
			miss.WriteRune(f)
		}
	}
	return miss.String()
}

// notifyStatus is what checkNotify found on one server.
type notifyStatus struct {
	addr    string
	current string // the setting before any change
	missing string // flags still missing after any change
	enabled string // flags this call added
	// readErr and setErr are CONFIG GET / CONFIG SET failures.
	readErr error
	setErr  error
}

// ok reports whether the server is known to publish what the live path needs.
func (s notifyStatus) ok() bool { return s.readErr == nil && s.missing == "" }

// checkNotify reads notify-keyspace-events and, when enable is set and
// flags are missing, adds them (keeping the existing ones).
func checkNotify(ctx context.Context, c *redis.Client, required string, enable bool) notifyStatus {
	st := notifyStatus{addr: c.Options().Addr}
	res, err := c.ConfigGet(ctx, notifyParam).Result()
	if err != nil {
		st.readErr = fmt.Errorf("CONFIG GET %s: %w", notifyParam, err)
		return st
	}
	cur, ok := res[notifyParam]
	if !ok {
		st.readErr = fmt.Errorf("CONFIG GET %s: not in the reply", notifyParam)
		return st
	}
	st.current = cur
	st.missing = missingFlags(cur, required)
	if st.missing == "" || !enable {
		return st
	}
	if err := c.ConfigSet(ctx, notifyParam, cur+st.missing).Err(); err != nil {
		st.setErr = fmt.Errorf("CONFIG SET %s %q: %w", notifyParam, cur+st.missing, err)
		return st
	}
	st.enabled, st.missing = st.missing, ""
	return st
}
