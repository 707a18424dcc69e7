package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/chronow/persister/internal/testenv"
)

// requireServers skips (fails in CI) when redis-server or bin/ferretdb is
// missing, like testenv does.
func requireServers(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Getenv(testenv.EnvRedisServerBin) == "" {
		if _, err := exec.LookPath("redis-server"); err != nil {
			missing = append(missing, "redis-server")
		}
	}
	if bin := os.Getenv(testenv.EnvFerretDBBin); bin == "" {
		root, err := testenv.Root()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(root, "bin", "ferretdb")); err != nil {
			missing = append(missing, "bin/ferretdb")
		}
	}
	if len(missing) == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("missing %v (CI is set: integration tests must not be skipped)", missing)
	}
	t.Skipf("missing %v (make redis ferretdb)", missing)
}
