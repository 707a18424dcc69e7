package testenv

import (
	"strings"
	"testing"
)

// LaunchRedis and LaunchFerretDB start servers that answer (they wait for
// it) and stop them; a binary variable naming a missing file is an error
// that names the variable.
func TestLaunchServers(t *testing.T) {
	for _, launch := range []func() (*Server, error){
		func() (*Server, error) { return LaunchRedis(t.TempDir()) },
		func() (*Server, error) { return LaunchFerretDB(t.TempDir(), "") },
	} {
		s, err := launch()
		if err != nil {
			t.Fatal(err)
		}
		if s.Pid() == 0 {
			t.Errorf("%s: no pid after launch", s.Name)
		}
		if err := s.Stop(); err != nil {
			t.Errorf("%s: stop: %v", s.Name, err)
		}
	}

	t.Setenv(EnvRedisServerBin, "/nonexistent/redis-server")
	if _, err := LaunchRedis(t.TempDir()); err == nil || !strings.Contains(err.Error(), EnvRedisServerBin) {
		t.Errorf("missing redis-server: got %v, want an error naming $%s", err, EnvRedisServerBin)
	}
	t.Setenv(EnvFerretDBBin, "/nonexistent/ferretdb")
	if _, err := LaunchFerretDB(t.TempDir(), ""); err == nil || !strings.Contains(err.Error(), EnvFerretDBBin) {
		t.Errorf("missing ferretdb: got %v, want an error naming $%s", err, EnvFerretDBBin)
	}
}
