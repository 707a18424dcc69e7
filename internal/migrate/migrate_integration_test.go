package migrate_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/chronow/persister/internal/config"
	"github.com/chronow/persister/internal/migrate"
	"github.com/chronow/persister/internal/sink"
	"github.com/chronow/persister/internal/testenv"
)

func TestMigrateEmptyThenExistingServer(t *testing.T) {
	ctx := context.Background()
	mc := testenv.StartMongo(t).Client(t)
	td := config.TenantDatabase{TenantID: "acme", DBConnRef: "mongo-primary", DBName: "cm_acme"}
	db := mc.Database(td.DBName)
	allIndexes := len(sink.Indexes())

	// Dry run on an empty server: everything is to be created, nothing is.
	rep, err := migrate.Tenant(ctx, db, td, migrate.Options{DryRun: true})
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if len(rep.CreatedCollections) != 4 || len(rep.ExistingCollections) != 0 || len(rep.CreatedIndexes) != allIndexes || len(rep.ExistingIndexes) != 0 {
		t.Fatalf("dry run on empty server: got %+v", rep)
	}
	names, err := mc.ListDatabaseNames(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(names, td.DBName) {
		t.Fatalf("dry run created database %s", td.DBName)
	}

	// Migrate an empty server: everything created.
	rep, err = migrate.Tenant(ctx, db, td, migrate.Options{})
	if err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if len(rep.CreatedCollections) != 4 || len(rep.CreatedIndexes) != allIndexes || len(rep.ExistingIndexes) != 0 {
		t.Fatalf("migrate on empty server: got %+v", rep)
	}
	colls, err := db.ListCollectionNames(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(colls)
	if want := []string{"dead_letters", "messages", "shared_memory", "topics"}; !slices.Equal(colls, want) {
		t.Fatalf("collections: got %v, want %v", colls, want)
	}
	// Every index is really there, by name.
	for _, ix := range sink.Indexes() {
		specs, err := db.Collection(ix.Collection).Indexes().ListSpecifications(ctx)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, s := range specs {
			found = found || s.Name == ix.Name()
		}
		if !found {
			t.Errorf("index %s.%s missing after migrate", ix.Collection, ix.Name())
		}
	}

	// Again, and dry run again, on the existing server: nothing to do.
	for _, dry := range []bool{false, true} {
		rep, err = migrate.Tenant(ctx, db, td, migrate.Options{DryRun: dry})
		if err != nil {
			t.Fatalf("second migrate (dry run %v): %v", dry, err)
		}
		if len(rep.CreatedCollections) != 0 || len(rep.ExistingCollections) != 4 || len(rep.CreatedIndexes) != 0 || len(rep.ExistingIndexes) != allIndexes {
			t.Fatalf("migrate on existing server (dry run %v): got %+v", dry, rep)
		}
	}
	var text bytes.Buffer
	if err := migrate.WriteText(&text, []migrate.TenantReport{rep}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"tenant acme: database cm_acme", "collections to create: none", "messages.topic_1_msgId_1_tenantId_1_namespace_1", "none configured"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
}

// FerretDB v1.24 refuses TTL indexes: migrate must say so and fail, after
// creating everything else; --skip-retention accepts it.
func TestMigrateRetentionOnServerWithoutTTL(t *testing.T) {
	ctx := context.Background()
	db := testenv.StartMongo(t).Client(t).Database("cm_ret")
	td := config.TenantDatabase{TenantID: "ret", DBConnRef: "mongo-primary", DBName: "cm_ret",
		RetentionDays: map[string]int{config.CollMessages: 30, config.CollSharedMemory: 7}}

	rep, err := migrate.Tenant(ctx, db, td, migrate.Options{DryRun: true})
	if !errors.Is(err, migrate.ErrTTLUnsupported) {
		t.Fatalf("dry run: got error %v, want ErrTTLUnsupported (FerretDB detected)", err)
	}
	if len(rep.Retention) != 2 || rep.Retention[0].Status != migrate.StatusUnsupported {
		t.Fatalf("dry run retention: %+v", rep.Retention)
	}

	rep, err = migrate.Tenant(ctx, db, td, migrate.Options{})
	if !errors.Is(err, migrate.ErrTTLUnsupported) {
		t.Fatalf("migrate: got error %v, want ErrTTLUnsupported", err)
	}
	if len(rep.CreatedCollections) != 4 || len(rep.CreatedIndexes) != len(sink.Indexes()) {
		t.Errorf("schema must be created before retention fails: %+v", rep)
	}
	want := []migrate.RetentionResult{
		{Collection: "messages", Field: "firstSeenAt", Days: 30, ExpireAfterSeconds: 30 * 86400, Index: migrate.RetentionIndexName, Status: migrate.StatusUnsupported},
		{Collection: "shared_memory", Field: "_system.expireAt", Days: 7, ExpireAfterSeconds: 0, Index: migrate.RetentionIndexName, Status: migrate.StatusUnsupported},
	}
	if len(rep.Retention) != len(want) {
		t.Fatalf("retention: got %+v", rep.Retention)
	}
	for i, w := range want {
		g := rep.Retention[i]
		if !strings.Contains(g.Detail, "expireAfterSeconds") {
			t.Errorf("retention %d detail %q should quote the server's refusal", i, g.Detail)
		}
		g.Detail = ""
		if g != w {
			t.Errorf("retention %d: got %+v, want %+v", i, g, w)
		}
	}
	var text bytes.Buffer
	_ = migrate.WriteText(&text, []migrate.TenantReport{rep})
	if !strings.Contains(text.String(), "UNSUPPORTED") || !strings.Contains(text.String(), "ERROR:") {
		t.Errorf("text report must show the refusal:\n%s", text.String())
	}

	rep, err = migrate.Tenant(ctx, db, td, migrate.Options{SkipRetention: true})
	if err != nil {
		t.Fatalf("--skip-retention: %v", err)
	}
	if len(rep.Retention) != 2 || rep.Retention[1].Status != migrate.StatusSkipped {
		t.Errorf("--skip-retention retention: %+v", rep.Retention)
	}
}
