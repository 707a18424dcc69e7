package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
)

// eventually retries f every 50ms until it returns nil or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()

	deadline := time.Now().Add(timeout)

	for {
		err := f()
		if err == nil {
			return
		}

		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
		}

		time.Sleep(50 * time.Millisecond)
	}
}

func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)

	return ctx
}

func TestRepoRoot(t *testing.T) {
	root := RepoRoot(t)
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatal(err)
	}

	if _, err := os.Stat(filepath.Join(root, "internal", "testenv")); err != nil {
		t.Fatalf("RepoRoot %q does not look like the persister repository: %v", root, err)
	}
}

func TestFreePort(t *testing.T) {
	seen := map[int]bool{}

	for range 20 {
		p := FreePort(t)
		if seen[p] {
			t.Fatalf("port %d returned twice", p)
		}

		seen[p] = true

		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("FreePort returned %d, which cannot be bound: %v", p, err)
		}

		_ = l.Close()
	}
}

func TestRedis(t *testing.T) {
	r := StartRedis(t)
	ctx := ctxTimeout(t, time.Minute)

	if r.URL != "redis://"+r.Addr+"/0" {
		t.Errorf("URL = %q", r.URL)
	}

	opt, err := redis.ParseURL(r.URL)
	if err != nil || opt.Addr != r.Addr {
		t.Fatalf("ParseURL(%q) = %v, %v", r.URL, opt, err)
	}

	c := r.Client(t)
	if res, err := c.Ping(ctx).Result(); err != nil || res != "PONG" {
		t.Fatalf("PING = %q, %v", res, err)
	}

	if r.Pid() <= 0 {
		t.Fatalf("Pid() = %d", r.Pid())
	}

	t.Run("PauseResume", func(t *testing.T) {
		short := redis.NewClient(&redis.Options{Addr: r.Addr, ReadTimeout: 300 * time.Millisecond, MaxRetries: -1})
		defer short.Close()

		if err := short.Ping(ctx).Err(); err != nil {
			t.Fatal(err)
		}

		r.Pause(t)

		start := time.Now()
		err := short.Ping(ctx).Err()

		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("PING on a paused server: want a timeout, got %v", err)
		}

		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("PING on a paused server took %s", d)
		}

		r.Resume(t)

		eventually(t, 10*time.Second, "PING after Resume", func() error { return short.Ping(ctx).Err() })
	})

	t.Run("KillRestartWithoutAOF", func(t *testing.T) {
		if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
			t.Fatal(err)
		}

		pid := r.Pid()
		r.Kill(t)

		if r.Pid() != 0 || !processGone(pid) {
			t.Fatalf("after Kill: Pid() = %d, process %d gone = %v", r.Pid(), pid, processGone(pid))
		}

		if err := c.Ping(ctx).Err(); err == nil {
			t.Fatal("PING succeeded on a killed server")
		}

		r.Restart(t)

		eventually(t, 10*time.Second, "PING after Restart", func() error { return c.Ping(ctx).Err() })

		// no persistence by default: the key is gone
		if err := c.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
			t.Fatalf("GET k after restart without AOF: want redis.Nil, got %v", err)
		}
	})
}

func TestRedisAOFRestart(t *testing.T) {
	r := StartRedis(t, WithAppendOnly(), WithRedisArgs("--maxmemory-policy", "noeviction"))
	ctx := ctxTimeout(t, time.Minute)
	c := r.Client(t)

	if v, err := c.ConfigGet(ctx, "appendonly").Result(); err != nil || v["appendonly"] != "yes" {
		t.Fatalf("CONFIG GET appendonly = %v, %v", v, err)
	}

	if v, err := c.ConfigGet(ctx, "maxmemory-policy").Result(); err != nil || v["maxmemory-policy"] != "noeviction" {
		t.Fatalf("CONFIG GET maxmemory-policy = %v, %v (WithRedisArgs not applied)", v, err)
	}

	for i := range 100 {
		if err := c.XAdd(ctx, &redis.XAddArgs{Stream: "s", Values: map[string]any{"i": i}}).Err(); err != nil {
			t.Fatal(err)
		}
	}

	addr, pid := r.Addr, r.Pid()
	r.Kill(t)

	if !processGone(pid) {
		t.Fatalf("process %d still exists after Kill", pid)
	}

	r.Restart(t)

	if r.Addr != addr {
		t.Fatalf("Addr changed on Restart: %q -> %q", addr, r.Addr)
	}

	if r.Pid() == pid || r.Pid() == 0 {
		t.Fatalf("Pid after Restart = %d (before: %d)", r.Pid(), pid)
	}

	var n int64

	eventually(t, 10*time.Second, "XLEN after Restart", func() error {
		var err error
		n, err = c.XLen(ctx, "s").Result()
		return err
	})

	if n != 100 {
		t.Fatalf("XLEN s after AOF restart = %d, want 100", n)
	}
}

func TestMongo(t *testing.T) {
	m := StartMongo(t)
	ctx := ctxTimeout(t, 2*time.Minute)

	if m.URI != "mongodb://"+m.Addr+"/" {
		t.Errorf("URI = %q", m.URI)
	}

	c := m.Client(t)
	coll := c.Database("testenv").Collection("docs")

	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}, {Key: "n", Value: 1}}); err != nil {
		t.Fatal(err)
	}

	var got struct {
		ID string `bson:"_id"`
		N  int    `bson:"n"`
	}
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: "a"}}).Decode(&got); err != nil || got.N != 1 {
		t.Fatalf("FindOne = %+v, %v", got, err)
	}

	t.Run("PauseResume", func(t *testing.T) {
		m.Pause(t)

		opCtx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		err := coll.FindOne(opCtx, bson.D{{Key: "_id", Value: "a"}}).Err()
		cancel()

		if !mongo.IsTimeout(err) && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("FindOne on a paused server: want a timeout, got %v", err)
		}

		m.Resume(t)

		eventually(t, 15*time.Second, "FindOne after Resume", func() error {
			opCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			return coll.FindOne(opCtx, bson.D{{Key: "_id", Value: "a"}}).Err()
		})
	})

	t.Run("KillRestart", func(t *testing.T) {
		if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "before-kill"}}); err != nil {
			t.Fatal(err)
		}

		pid := m.Pid()
		m.Kill(t)

		if m.Pid() != 0 || !processGone(pid) {
			t.Fatalf("after Kill: Pid() = %d, process %d gone = %v", m.Pid(), pid, processGone(pid))
		}

		opCtx, cancel := context.WithTimeout(ctx, time.Second)
		err := coll.FindOne(opCtx, bson.D{}).Err()
		cancel()

		if err == nil {
			t.Fatal("FindOne succeeded on a killed server")
		}

		m.Restart(t)

		eventually(t, 15*time.Second, "FindOne after Restart", func() error {
			opCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			return coll.FindOne(opCtx, bson.D{{Key: "_id", Value: "before-kill"}}).Err()
		})

		n, err := coll.CountDocuments(ctx, bson.D{})
		if err != nil || n != 2 {
			t.Fatalf("CountDocuments after restart = %d, %v; want 2", n, err)
		}
	})
}

func TestStartMongoLater(t *testing.T) {
	m := StartMongoLater(t)
	ctx := ctxTimeout(t, time.Minute)

	if m.Pid() != 0 {
		t.Fatalf("Pid() = %d before Start", m.Pid())
	}

	if conn, err := net.DialTimeout("tcp", m.Addr, time.Second); err == nil {
		_ = conn.Close()
		t.Fatalf("%s accepts connections before Start", m.Addr)
	}

	// a client created before the server exists connects once it is up
	c := m.Client(t)

	m.Start(t)

	eventually(t, 15*time.Second, "Ping after Start", func() error {
		opCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return c.Ping(opCtx, nil)
	})
}

// TestCleanupKillsServers checks that servers do not outlive their test,
// including a paused one.
func TestCleanupKillsServers(t *testing.T) {
	var redisPid, mongoPid int

	t.Run("start", func(t *testing.T) {
		r := StartRedis(t)
		m := StartMongo(t)
		_ = m.Client(t)

		r.Pause(t)
		m.Pause(t)

		redisPid, mongoPid = r.Pid(), m.Pid()
	})

	if redisPid == 0 || mongoPid == 0 {
		t.Fatalf("pids: redis %d, mongo %d", redisPid, mongoPid)
	}

	if !processGone(redisPid) || !processGone(mongoPid) {
		t.Fatalf("servers still running after their test ended: redis %d gone=%v, mongo %d gone=%v",
			redisPid, processGone(redisPid), mongoPid, processGone(mongoPid))
	}
}

// fakeTB records Skip/Fatal instead of acting on the real test.
type fakeTB struct {
	testing.TB
	skipped, fatal string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Skip(args ...any) {
	f.skipped = fmt.Sprint(args...)
	runtime.Goexit()
}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func runFake(t *testing.T, f func(tb testing.TB)) *fakeTB {
	fake := &fakeTB{TB: t}
	done := make(chan struct{})

	go func() {
		defer close(done)
		f(fake)
	}()
	<-done

	return fake
}

func TestMissingBinary(t *testing.T) {
	t.Setenv(EnvFerretDBBin, filepath.Join(t.TempDir(), "no-such-ferretdb"))
	t.Setenv(EnvRedisServerBin, filepath.Join(t.TempDir(), "no-such-redis-server"))

	// Locally a missing binary skips the test; with CI set it fails it.
	for _, tc := range []struct {
		name, ci string
		skip     bool
	}{
		{"local skips", "", true},
		{"CI fails", "true", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CI", tc.ci)

			for name, f := range map[string]func(testing.TB){
				"mongo": func(tb testing.TB) { StartMongo(tb) },
				"redis": func(tb testing.TB) { StartRedis(tb) },
			} {
				fake := runFake(t, f)
				switch {
				case tc.skip && (fake.skipped == "" || fake.fatal != ""):
					t.Errorf("%s: want skip, got skip=%q fatal=%q", name, fake.skipped, fake.fatal)
				case !tc.skip && (fake.fatal == "" || fake.skipped != ""):
					t.Errorf("%s: want fatal, got skip=%q fatal=%q", name, fake.skipped, fake.fatal)
				}
				if tc.skip {
					t.Logf("%s: %s", name, fake.skipped)
				}
			}
		})
	}
}
