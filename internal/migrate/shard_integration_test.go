package migrate_test

import (
	"context"
	"errors"
	"testing"

	"github.com/chronow/persister/internal/migrate"
	"github.com/chronow/persister/internal/testenv"
)

// TestShardRefusesAPlainServer runs the mongos check against a real
// server that is not a router (FerretDB, like a standalone mongod or a
// replica set member): sharding is refused before anything is sent. No
// mongos is available here; the commands themselves are checked in
// shard_test.go.
func TestShardRefusesAPlainServer(t *testing.T) {
	ms := testenv.StartMongo(t)
	run := migrate.DatabaseRunner(ms.Client(t))
	res, err := migrate.Shard(context.Background(), run, "cm_acme", false)
	if !errors.Is(err, migrate.ErrNotMongos) {
		t.Fatalf("Shard on FerretDB: %v, want ErrNotMongos", err)
	}
	if len(res) != 0 {
		t.Errorf("results %+v, want none", res)
	}
}
