// Package testenv starts real servers (redis-server, and FerretDB as a
// Mongo-compatible server) for integration tests.
//
// Every server is a child process owned by one test: it listens on
// 127.0.0.1 on a free port, keeps its data in the test's temp dir, writes
// its stdout/stderr to a log file there, and is SIGKILLed in t.Cleanup
// (also when the test fails; the tail of the log is then printed). Children
// run in their own process group and get SIGKILL if the test binary dies
// (Pdeathsig), so no server outlives `go test`.
//
// Binaries:
//   - redis-server: $PERSISTER_REDIS_SERVER_BIN, else redis-server from $PATH
//     (install: `make redis` or `apt-get install redis-server`).
//   - FerretDB: $PERSISTER_FERRETDB_BIN, else <repo root>/bin/ferretdb
//     (build: `make ferretdb`).
//
// If a binary is missing the test is skipped, except when $CI is non-empty:
// then it fails, so CI never silently skips integration tests.
// `bash scripts/test.sh` (`make test`) sets both variables.
package testenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ReadyTimeout bounds how long Start*/Restart wait for a server to answer.
const ReadyTimeout = 20 * time.Second

// killTimeout bounds how long we wait for a SIGKILLed process to be reaped.
const killTimeout = 10 * time.Second

const modulePath = "github.com/chronow/persister"

// Environment variables naming the server binaries.
const (
	EnvRedisServerBin = "PERSISTER_REDIS_SERVER_BIN"
	EnvFerretDBBin    = "PERSISTER_FERRETDB_BIN"
)

// missingBinary skips the test, or fails it when running in CI.
func missingBinary(t testing.TB, what, how string) {
	t.Helper()

	msg := fmt.Sprintf("testenv: %s not found; %s", what, how)
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI is set: integration tests must not be skipped)", msg)
	}

	t.Skip(msg)
}

// RepoRoot returns the root directory of the persister module (the directory
// holding the go.mod of github.com/chronow/persister).
func RepoRoot(t testing.TB) string {
	t.Helper()

	root, err := repoRoot()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}

	return root
}

var (
	repoRootOnce sync.Once
	repoRootDir  string
	repoRootErr  error
)

func repoRoot() (string, error) {
	repoRootOnce.Do(func() {
		var starts []string
		if wd, err := os.Getwd(); err == nil {
			starts = append(starts, wd)
		}

		if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
			starts = append(starts, filepath.Dir(file))
		}

		for _, dir := range starts {
			for {
				if isModuleRoot(dir) {
					repoRootDir = dir
					return
				}

				parent := filepath.Dir(dir)
				if parent == dir {
					break
				}

				dir = parent
			}
		}

		repoRootErr = fmt.Errorf("cannot find the repository root (go.mod of module %s) above %q", modulePath, starts)
	})

	return repoRootDir, repoRootErr
}

func isModuleRoot(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}

	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`) == modulePath
		}
	}

	return false
}

// FreePort returns a TCP port on 127.0.0.1 that is free now and reserved
// for this test: it is chosen below the kernel's ephemeral range (so
// outgoing connections do not grab it while a server is down between Kill
// and Restart), and an flock on a file in the system temp dir keeps other
// test processes using testenv from picking it until the test's cleanup.
func FreePort(t testing.TB) int {
	t.Helper()

	port, release, err := reservePort()
	if err != nil {
		t.Fatalf("testenv: FreePort: %v", err)
	}

	t.Cleanup(release)

	return port
}

var (
	portsMu   sync.Mutex
	portsUsed = map[int]bool{} // handed out by this process and not released
)

func reservePort() (int, func(), error) {
	lockDir := filepath.Join(os.TempDir(), "persister-testenv-ports")
	if err := os.MkdirAll(lockDir, 0o777); err != nil {
		return 0, nil, err
	}

	lo, hi := portRange()

	var lastErr error

	for range 200 {
		port := lo + rand.IntN(hi-lo)

		portsMu.Lock()
		used := portsUsed[port]
		if !used {
			portsUsed[port] = true
		}
		portsMu.Unlock()

		if used {
			continue
		}

		release, err := lockPort(lockDir, port)
		if err == nil {
			var l net.Listener
			if l, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
				_ = l.Close()

				return port, func() {
					release()
					portsMu.Lock()
					delete(portsUsed, port)
					portsMu.Unlock()
				}, nil
			}

			release()
		}

		lastErr = err

		portsMu.Lock()
		delete(portsUsed, port)
		portsMu.Unlock()
	}

	return 0, nil, fmt.Errorf("no free port found in [%d, %d): %v", lo, hi, lastErr)
}

// portRange returns [lo, hi) for FreePort: below the ephemeral port range.
func portRange() (int, int) {
	lo, hi := 15000, 32768

	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if eph, err := strconv.Atoi(f[0]); err == nil && eph > 12000 {
				hi = eph
				lo = min(lo, hi-2000)
			}
		}
	}

	return lo, hi
}

func lockPort(dir string, port int) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)+".lock"), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, err
	}

	if err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("port %d locked by another process: %w", port, err)
	}

	return func() { _ = f.Close() }, nil // closing releases the flock
}

// proc is one server process, restartable with the same arguments.
type proc struct {
	name    string // for messages: "redis-server", "ferretdb"
	bin     string
	args    []string
	logPath string
	addr    string // 127.0.0.1:port

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has been reaped
	paused  bool
	starts  int
	waitErr error
}

// start launches the process; the caller waits for readiness.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()

	if p.cmd != nil {
		return fmt.Errorf("%s is already running (pid %d)", p.name, p.cmd.Process.Pid)
	}

	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child has its own copy

	p.starts++
	fmt.Fprintf(logFile, "=== testenv: start #%d at %s: %s %s\n",
		p.starts, time.Now().Format(time.RFC3339Nano), p.bin, strings.Join(p.args, " "))

	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile

	if err := StartGroup(cmd); err != nil { // the server dies with the test binary
		return fmt.Errorf("starting %s: %w", p.name, err)
	}

	exited := make(chan struct{})
	p.cmd = cmd
	p.exited = exited
	p.paused = false

	go func() {
		err := cmd.Wait()

		p.mu.Lock()
		p.waitErr = err
		if p.cmd == cmd {
			p.cmd = nil
			p.paused = false
		}
		p.mu.Unlock()

		close(exited)
	}()

	return nil
}

// running returns the current process and its exit channel, or nil.
func (p *proc) running() (*exec.Cmd, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()

	return p.cmd, p.exited
}

func (p *proc) pid() int {
	cmd, _ := p.running()
	if cmd == nil {
		return 0
	}

	return cmd.Process.Pid
}

// kill SIGKILLs the process group and waits until the process is reaped.
// It is a no-op if the process is not running.
func (p *proc) kill() error {
	cmd, exited := p.running()
	if cmd == nil {
		return nil
	}

	pid := cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGKILL) // whole group (Setpgid: pgid == pid)
	_ = cmd.Process.Kill()

	select {
	case <-exited:
		return nil
	case <-time.After(killTimeout):
		return fmt.Errorf("%s (pid %d) did not exit %s after SIGKILL", p.name, pid, killTimeout)
	}
}

// signal sends sig to the process group.
func (p *proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()

	if p.cmd == nil {
		return fmt.Errorf("%s is not running", p.name)
	}

	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil {
		return fmt.Errorf("%s: kill(%v): %w", p.name, sig, err)
	}

	switch sig {
	case syscall.SIGSTOP:
		p.paused = true
	case syscall.SIGCONT:
		p.paused = false
	}

	return nil
}

// resumeIfPaused sends SIGCONT if the process was paused (used before
// closing clients, so that a polite disconnect does not hang).
func (p *proc) resumeIfPaused() {
	p.mu.Lock()
	paused := p.paused
	p.mu.Unlock()

	if paused {
		_ = p.signal(syscall.SIGCONT)
	}
}

// waitReady polls ready until it succeeds, the process exits, or ReadyTimeout.
func (p *proc) waitReady(ready func(timeout time.Duration) error) error {
	_, exited := p.running()
	if exited == nil {
		return fmt.Errorf("%s is not running", p.name)
	}

	deadline := time.Now().Add(ReadyTimeout)
	lastErr := errors.New("not tried")

	for attempt := 0; ; attempt++ {
		select {
		case <-exited:
			p.mu.Lock()
			werr := p.waitErr
			p.mu.Unlock()

			return fmt.Errorf("%s exited before it was ready (%v); last check error: %v", p.name, werr, lastErr)
		default:
		}

		if lastErr = ready(time.Second); lastErr == nil {
			return nil
		}

		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready on %s after %s: %v", p.name, p.addr, ReadyTimeout, lastErr)
		}

		time.Sleep(min(10*time.Millisecond*time.Duration(attempt+1), 100*time.Millisecond))
	}
}

// logTail returns the last lines of the log file.
func (p *proc) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logPath, err)
	}

	const maxBytes, maxLines = 16 << 10, 80

	if len(b) > maxBytes {
		b = b[len(b)-maxBytes:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}

	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}

	return strings.Join(lines, "\n")
}

// register sets up cleanups: kill the process (always), then, if the test
// failed, print the log tail. Call before the first start.
func (p *proc) register(t testing.TB) {
	t.Helper()

	// Cleanups run last-registered-first: register the log printer first so
	// it runs after the kill and sees the complete log.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("testenv: %s on %s failed test; last lines of %s:\n%s", p.name, p.addr, p.logPath, p.logTail())
		}
	})
	t.Cleanup(func() {
		if err := p.kill(); err != nil {
			t.Errorf("testenv: cleanup: %v", err)
		}
	})
}

// startAndWait starts the process and waits for readiness; on failure the
// process is killed and the test fails with the log tail.
func (p *proc) startAndWait(t testing.TB, ready func(timeout time.Duration) error) {
	t.Helper()

	if err := p.start(); err != nil {
		t.Fatalf("testenv: %v", err)
	}

	if err := p.waitReady(ready); err != nil {
		_ = p.kill()
		t.Fatalf("testenv: %v\nlast lines of %s:\n%s", err, p.logPath, p.logTail())
	}
}

// dialCheck is a cheap readiness pre-check: the port accepts connections.
func dialCheck(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}

	return c.Close()
}

// serverProc is the process of a server started for one test, with what
// Redis and Mongo offer on it alike.
type serverProc struct {
	p *proc
}

// Kill sends SIGKILL to the server and waits until it has exited.
// It is a no-op if the server is not running.
func (s serverProc) Kill(t testing.TB) {
	t.Helper()

	if err := s.p.kill(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// Pause stops the server with SIGSTOP: connections stay open but nothing is
// answered (clients see timeouts, not connection errors).
func (s serverProc) Pause(t testing.TB) {
	t.Helper()

	if err := s.p.signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("testenv: Pause: %v", err)
	}
}

// Resume continues a paused server with SIGCONT.
func (s serverProc) Resume(t testing.TB) {
	t.Helper()

	if err := s.p.signal(syscall.SIGCONT); err != nil {
		t.Fatalf("testenv: Resume: %v", err)
	}
}

// Pid returns the server's process id, or 0 if it is not running.
func (s serverProc) Pid() int {
	return s.p.pid()
}
