package testenv

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Server is a server process started outside a test (by the benchmark
// command): the same launch, readiness check and process-group handling as
// StartRedis and StartMongo, without a testing.TB. The caller owns it and
// must call Stop.
type Server struct {
	Name string // "redis-server" or "ferretdb"
	Addr string // 127.0.0.1:port
	// URL is the client URL: redis://addr/0 or mongodb://addr/.
	URL string
	Dir string // data directory
	Log string // path of the server's stdout/stderr log

	p       *proc
	release func()
	once    sync.Once
	stopErr error
}

// LaunchRedis starts redis-server (found like StartRedis finds it) on a free
// port with its data and log under dir, without persistence, and waits until
// it answers PING. extra arguments come last and override the defaults.
func LaunchRedis(dir string, extra ...string) (*Server, error) {
	bin, err := redisServer.find()
	if err != nil {
		return nil, fmt.Errorf("%w not found (run `make redis`)", err)
	}
	data, port, release, err := launchDirAndPort(dir, "redis-data")
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	args := []string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--protected-mode", "no",
		"--daemonize", "no",
		"--dir", data,
		"--logfile", "",
		"--save", "",
		"--appendonly", "no",
	}
	args = append(args, extra...)
	s := &Server{Name: "redis-server", Addr: addr, URL: "redis://" + addr + "/0", Dir: data, Log: filepath.Join(dir, "redis.log"), release: release}
	s.p = &proc{name: s.Name, bin: bin, args: args, logPath: s.Log, addr: addr}
	r := &Redis{Addr: addr}
	return s, s.launch(r.ping)
}

// launchDirAndPort creates the server's data directory dir/sub and reserves
// a free port for it (release frees the reservation).
func launchDirAndPort(dir, sub string) (data string, port int, release func(), err error) {
	data = filepath.Join(dir, sub)
	if err := os.MkdirAll(data, 0o755); err != nil {
		return "", 0, nil, err
	}
	port, release, err = reservePort()
	if err != nil {
		return "", 0, nil, err
	}
	return data, port, release, nil
}

// applyOptions returns the configuration the options make of a zero one.
func applyOptions[C any, O ~func(*C)](opts []O) C {
	var c C
	for _, o := range opts {
		o(&c)
	}
	return c
}

// testServer is a server prepared for one test: its binary, a temp dir
// (for its log) with its data directory in it, and a free port.
type testServer struct {
	bin  string
	tmp  string
	data string // tmp/sub
	port int
	addr string // 127.0.0.1:port
}

// newTestServer finds b's binary, creates a temp dir for one test's server
// with its data directory tmp/sub in it, and reserves a free port.
func newTestServer(t testing.TB, b serverBinary, sub string) testServer {
	t.Helper()

	s := testServer{bin: b.must(t), port: FreePort(t), tmp: t.TempDir()}
	s.data = filepath.Join(s.tmp, sub)
	s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))

	if err := os.MkdirAll(s.data, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}

	return s
}

// proc returns the server's process (name, args, log file), its cleanups
// registered (proc.register).
func (s testServer) proc(t testing.TB, name string, args []string, logPath string) *proc {
	t.Helper()

	p := &proc{name: name, bin: s.bin, args: args, logPath: logPath, addr: s.addr}
	p.register(t)

	return p
}

// LaunchFerretDB starts bin/ferretdb (found like StartMongo finds it) on a
// free port with its SQLite state and log under dir, and waits until a
// mongo-driver ping succeeds. logLevel "" means "warn".
func LaunchFerretDB(dir, logLevel string) (*Server, error) {
	bin, err := ferretDB.find()
	if err != nil {
		return nil, fmt.Errorf("%w not found (run `make ferretdb`)", err)
	}
	if logLevel == "" {
		logLevel = "warn"
	}
	state, port, release, err := launchDirAndPort(dir, "ferretdb-state")
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s := &Server{Name: "ferretdb", Addr: addr, URL: "mongodb://" + addr + "/", Dir: state, Log: filepath.Join(dir, "ferretdb.log"), release: release}
	s.p = &proc{
		name: s.Name, bin: bin, logPath: s.Log, addr: addr,
		args: []string{"-listen-addr", addr, "-state-dir", state, "-log-level", logLevel},
	}
	m := &Mongo{Addr: addr, URI: s.URL}
	return s, s.launch(m.ping)
}

func (s *Server) launch(ready func(timeout time.Duration) error) error {
	if err := s.p.start(); err != nil {
		s.release()
		return err
	}
	if err := s.p.waitReady(ready); err != nil {
		_ = s.Stop()
		return fmt.Errorf("%w\nlast lines of %s:\n%s", err, s.Log, s.p.logTail())
	}
	return nil
}

// Pid returns the server's process id, or 0 if it is not running.
func (s *Server) Pid() int { return s.p.pid() }

// Stop SIGKILLs the server, waits until it has exited and frees its port.
// It is safe to call more than once.
func (s *Server) Stop() error {
	s.once.Do(func() {
		s.stopErr = s.p.kill()
		s.release()
	})
	return s.stopErr
}

// LogTail returns the last lines of the server's log.
func (s *Server) LogTail() string { return s.p.logTail() }

// Root returns the root directory of the persister module, found from the
// working directory (or this source file's location).
func Root() (string, error) { return repoRoot() }
