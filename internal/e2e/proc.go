package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chronow/persister/internal/testenv"
)

// BuildBinary builds cmd/persister into a temp dir and returns its path.
func BuildBinary(t testing.TB) string {
	t.Helper()
	bin, err := Build(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// Build builds cmd/persister into dir and returns the binary's path.
func Build(ctx context.Context, dir string) (string, error) {
	root, err := testenv.Root()
	if err != nil {
		return "", err
	}
	return testenv.BuildPersister(ctx, root, dir)
}

// Proc is the real persister binary running as a child process.
type Proc struct {
	t       testing.TB
	bin     string
	env     map[string]string
	LogPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// StartProc starts `persister run` with env (plus PATH and HOME).
func StartProc(t testing.TB, bin string, env map[string]string) *Proc {
	t.Helper()
	p := &Proc{t: t, bin: bin, env: env, LogPath: filepath.Join(t.TempDir(), "persister.log")}
	p.Start()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			b, _ := os.ReadFile(p.LogPath)
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("persister log tail (%s):\n%s", p.LogPath, b)
		}
	})
	return p
}

// Start (re)starts the process, appending to the same log.
func (p *Proc) Start() {
	p.t.Helper()
	f, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	cmd := testenv.PersisterCommand(p.bin, p.env)
	cmd.Stdout, cmd.Stderr = f, f
	if err := testenv.StartGroup(cmd); err != nil {
		p.t.Fatalf("start persister: %v", err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.err = cmd, done, nil
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
}

// Kill sends SIGKILL and waits.
func (p *Proc) Kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Term sends SIGTERM and waits up to timeout; it returns the exit code.
func (p *Proc) Term(timeout time.Duration) (int, error) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(timeout):
		p.Kill()
		return -1, fmt.Errorf("persister did not exit within %s of SIGTERM", timeout)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode(), nil
	}
	return 0, p.err
}

// Pid returns the current process id.
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// Log returns the process log so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// Pending sums XPENDING counts of group over the given streams.
func Pending(ctx context.Context, rdb redis.UniversalClient, group string, streams []string) (int64, error) {
	var total int64
	for _, s := range streams {
		res, err := rdb.XPending(ctx, s, group).Result()
		if err != nil {
			return 0, fmt.Errorf("xpending %s: %w", s, err)
		}
		total += res.Count
	}
	return total, nil
}

// StreamKeys lists the distinct stream keys in ledger records under prefix.
func StreamKeys(records []Record, prefix string) []string {
	set := map[string]bool{}
	for _, r := range records {
		set[r.Msg.Key(prefix)] = true
	}
	var out []string
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Redacted reports whether s contains none of the secrets.
func Redacted(s string, secrets ...string) error {
	var found []string
	for _, sec := range secrets {
		if sec != "" && bytes.Contains([]byte(s), []byte(sec)) {
			found = append(found, sec)
		}
	}
	if len(found) > 0 {
		return fmt.Errorf("log contains secrets %s", strings.Join(found, ", "))
	}
	return nil
}
