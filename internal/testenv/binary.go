package testenv

import (
	"fmt"
	"os"
	"testing"
)

// serverBinary is a server binary testenv runs: $env when it is set (the
// file must exist), else where fallback finds it; hint says how to get it
// when it is missing.
type serverBinary struct {
	what     string // as messages name it: "redis-server", "FerretDB binary"
	env      string
	fallback func() (string, error)
	hint     string
}

var (
	redisServer = serverBinary{
		what: "redis-server", env: EnvRedisServerBin, fallback: redisServerInPath,
		hint: "run `make redis` or `apt-get install redis-server`",
	}
	ferretDB = serverBinary{
		what: "FerretDB binary", env: EnvFerretDBBin, fallback: ferretDBInRepo,
		hint: "run `make ferretdb` at the repository root (builds bin/ferretdb from tools/ferretdb)",
	}
)

// find returns the binary; the error says which was missing.
func (b serverBinary) find() (string, error) {
	bin := os.Getenv(b.env)
	if bin == "" {
		return b.fallback()
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%s ($%s=%q: %v)", b.what, b.env, bin, err)
	}
	return bin, nil
}

// must returns the binary, or reports it missing with its hint
// (missingBinary: a failure in CI, a skip elsewhere).
func (b serverBinary) must(t testing.TB) string {
	t.Helper()
	bin, err := b.find()
	if err != nil {
		missingBinary(t, err.Error(), b.hint)
	}
	return bin
}
