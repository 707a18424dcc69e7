package migrate

import (
	"context"
	"errors"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/chronow/persister/internal/sink"
)

// fakeServer answers hello like a mongos (or not) and records commands.
type fakeServer struct {
	mongos bool
	fail   map[string]error // command name → error
	got    []string         // "db: extended JSON of the command"
}

func (f *fakeServer) run(_ context.Context, db string, cmd bson.D) (bson.Raw, error) {
	js, err := bson.MarshalExtJSON(cmd, false, false)
	if err != nil {
		return nil, err
	}
	f.got = append(f.got, db+": "+string(js))
	if err := f.fail[cmd[0].Key]; err != nil {
		return nil, err
	}
	reply := bson.D{{Key: "ok", Value: 1}}
	if cmd[0].Key == "hello" {
		if f.mongos {
			reply = append(reply, bson.E{Key: "msg", Value: "isdbgrid"})
		} else {
			reply = append(reply, bson.E{Key: "isWritablePrimary", Value: true})
		}
	}
	return bson.Marshal(reply)
}

func TestShardCommands(t *testing.T) {
	f := &fakeServer{mongos: true}
	res, err := Shard(context.Background(), f.run, "cm_acme", false)
	if err != nil {
		t.Fatalf("Shard: %v", err)
	}
	want := []string{
		`admin: {"hello":1}`,
		`admin: {"enableSharding":"cm_acme"}`,
		`admin: {"shardCollection":"cm_acme.messages","key":{"topic":1,"msgId":1}}`,
		`cm_acme: {"createIndexes":"dead_letters","indexes":[{"key":{"_id":"hashed"},"name":"_id_hashed"}]}`,
		`admin: {"shardCollection":"cm_acme.dead_letters","key":{"_id":"hashed"}}`,
		`admin: {"shardCollection":"cm_acme.shared_memory","key":{"key":1,"namespace":1}}`,
		`cm_acme: {"createIndexes":"raw_entries.chunks","indexes":[{"key":{"files_id":1,"n":1},"name":"files_id_1_n_1","unique":true}]}`,
		`admin: {"shardCollection":"cm_acme.raw_entries.chunks","key":{"files_id":1,"n":1}}`,
	}
	if strings.Join(f.got, "\n") != strings.Join(want, "\n") {
		t.Errorf("commands:\n%s\nwant:\n%s", strings.Join(f.got, "\n"), strings.Join(want, "\n"))
	}
	for _, r := range res {
		if r.Status != StatusSharded {
			t.Errorf("%s: status %q, want %q", r.Collection, r.Status, StatusSharded)
		}
	}
	if res[0].Key != "{topic: 1, msgId: 1}" || res[1].Key != `{_id: "hashed"}` {
		t.Errorf("keys rendered %q, %q", res[0].Key, res[1].Key)
	}
}

func TestShardRefusesNonMongos(t *testing.T) {
	f := &fakeServer{mongos: false}
	for _, dry := range []bool{false, true} {
		f.got = nil
		_, err := Shard(context.Background(), f.run, "cm_acme", dry)
		if !errors.Is(err, ErrNotMongos) {
			t.Errorf("dry run %v: err %v, want ErrNotMongos", dry, err)
		}
		if len(f.got) != 1 {
			t.Errorf("dry run %v: sent %v, want only hello", dry, f.got)
		}
	}
}

func TestShardDryRunWritesNothing(t *testing.T) {
	f := &fakeServer{mongos: true}
	res, err := Shard(context.Background(), f.run, "cm_acme", true)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.got) != 1 || len(res) != len(ShardKeys()) || res[0].Status != StatusWouldShard {
		t.Errorf("dry run sent %v and reported %+v", f.got, res)
	}
}

func TestShardReportsFailures(t *testing.T) {
	// enableSharding already enabled (AlreadyInitialized) is fine; a
	// refused shardCollection is reported per collection.
	f := &fakeServer{mongos: true, fail: map[string]error{
		"enableSharding":  mongo.CommandError{Code: 23, Message: "already enabled"},
		"shardCollection": mongo.CommandError{Code: 20, Message: "collection already sharded with another key"},
	}}
	res, err := Shard(context.Background(), f.run, "cm_acme", false)
	if err == nil {
		t.Fatal("no error for refused shardCollection")
	}
	for _, r := range res {
		if r.Status != StatusFailed || !strings.Contains(r.Detail, "another key") {
			t.Errorf("%s: %+v, want failed with the server's reason", r.Collection, r)
		}
	}
}

// TestShardKeysArePrefixesOfUniqueIndexes checks the rule a sharded
// collection imposes: every unique index the daemon creates on a sharded
// collection starts with that collection's shard key (a hashed key on _id
// leaves only the _id index unique).
func TestShardKeysArePrefixesOfUniqueIndexes(t *testing.T) {
	keys := map[string]bson.D{}
	for _, k := range ShardKeys() {
		keys[k.Collection] = k.Key
	}
	for _, ix := range sink.Indexes() {
		sk, sharded := keys[ix.Collection]
		if !sharded || !ix.Unique {
			continue
		}
		if len(sk) > len(ix.Keys) {
			t.Errorf("%s: shard key %v longer than unique index %v", ix.Collection, sk, ix.Keys)
			continue
		}
		for i, e := range sk {
			if e.Value == "hashed" || ix.Keys[i].Key != e.Key {
				t.Errorf("%s: unique index %v does not start with shard key %v", ix.Collection, ix.Keys, sk)
				break
			}
		}
	}
}
