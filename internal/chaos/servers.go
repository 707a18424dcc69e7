package chaos

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"syscall"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/chronow/persister/internal/testenv"
)

// server is one redis-server or FerretDB process that the nemesis may
// pause, kill and relaunch (same data directory, so Redis reloads its AOF
// and FerretDB its SQLite files). A relaunch gets a new port; the proxies
// in front of it follow, so clients keep one address for the whole run.
type server struct {
	name   string
	launch func() (*testenv.Server, error)

	mu      sync.Mutex
	s       *testenv.Server
	paused  bool
	proxies []*toxiproxy.Proxy
	// ops is the proxies' lock for changes (proxies.ops), set by add.
	ops *sync.Mutex
}

func startServer(name string, launch func() (*testenv.Server, error)) (*server, error) {
	s, err := launch()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return &server{name: name, launch: launch, s: s}, nil
}

func (sv *server) addr() string {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	return sv.s.Addr
}

func (sv *server) signal(sig syscall.Signal) error {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	return sv.signalLocked(sig)
}

func (sv *server) signalLocked(sig syscall.Signal) error {
	pid := sv.s.Pid()
	if pid == 0 {
		return fmt.Errorf("%s is not running", sv.name)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("signal %s: %w", sv.name, err)
	}
	sv.paused = sig == syscall.SIGSTOP
	return nil
}

func (sv *server) pause() error  { return sv.signal(syscall.SIGSTOP) }
func (sv *server) resume() error { return sv.signal(syscall.SIGCONT) }

// kill SIGKILLs the server (it stays down until relaunch).
func (sv *server) kill() error {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	sv.paused = false
	return sv.s.Stop()
}

// relaunch starts the server again from its data directory and points its
// proxies at it.
func (sv *server) relaunch() error {
	s, err := sv.launch()
	if err != nil {
		return fmt.Errorf("relaunch %s: %w", sv.name, err)
	}
	sv.mu.Lock()
	sv.s = s
	proxies := append([]*toxiproxy.Proxy(nil), sv.proxies...)
	ops := sv.ops
	sv.mu.Unlock()
	if ops != nil {
		ops.Lock()
		defer ops.Unlock()
	}
	for _, p := range proxies {
		if err := p.Update(&toxiproxy.Proxy{Listen: p.Listen, Upstream: s.Addr, Enabled: true}); err != nil {
			return fmt.Errorf("proxy %s to %s: %w", p.Name, s.Addr, err)
		}
	}
	return nil
}

// close resumes (if paused) and stops the server.
func (sv *server) close() {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.paused {
		_ = sv.signalLocked(syscall.SIGCONT)
	}
	_ = sv.s.Stop()
}

func (sv *server) logTail() string {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	return sv.s.LogTail()
}

// proxies is the in-process Toxiproxy server: one proxy per (client, server)
// pair, listening on 127.0.0.1.
type proxies struct {
	api *toxiproxy.ApiServer
	all []*toxiproxy.Proxy
	// ops serialises changes to the proxies (toxics added and removed,
	// upstreams updated): Toxiproxy v2.9.0 can deadlock when a proxy's
	// Update (which waits for its accept loop) runs while a toxic of the
	// same proxy is being removed (which holds the lock the accept loop
	// needs for a new connection).
	ops sync.Mutex
}

func newProxies() *proxies {
	return &proxies{api: toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())}
}

// add starts a proxy named name in front of sv.
func (ps *proxies) add(name, listen string, sv *server) (*toxiproxy.Proxy, error) {
	p := toxiproxy.NewProxy(ps.api, name, listen, sv.addr())
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("proxy %s: %w", name, err)
	}
	sv.mu.Lock()
	sv.proxies = append(sv.proxies, p)
	sv.ops = &ps.ops
	sv.mu.Unlock()
	ps.all = append(ps.all, p)
	return p, nil
}

func (ps *proxies) close() {
	for _, p := range ps.all {
		p.Stop()
	}
}

// addToxic adds one toxic to p (both directions when stream is "").
func (ps *proxies) addToxic(p *toxiproxy.Proxy, name, typ, stream string, attrs string) error {
	ps.ops.Lock()
	defer ps.ops.Unlock()
	body := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"toxicity":1.0,"attributes":%s}`, name, typ, stream, attrs)
	if _, err := p.Toxics.AddToxicJson(bytes.NewBufferString(body)); err != nil {
		return fmt.Errorf("toxic %s on %s: %w", name, p.Name, err)
	}
	return nil
}

func (ps *proxies) removeToxic(p *toxiproxy.Proxy, name string) error {
	ps.ops.Lock()
	defer ps.ops.Unlock()
	return p.Toxics.RemoveToxic(context.Background(), name)
}
