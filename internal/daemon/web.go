package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
)

// serveHTTP serves the endpoints on ln: plain HTTP, or, with
// PERSISTER_WEB_CONFIG_FILE, as Prometheus exporters do (exporter-toolkit:
// TLS, client certificates, basic auth with bcrypt hashes, the file read
// again for each connection and request).
func (d *Daemon) serveHTTP(srv *http.Server, ln net.Listener) error {
	path := d.cfg.Web.ConfigFile
	if path == "" {
		return srv.Serve(ln)
	}
	systemd := false
	addrs := []string{ln.Addr().String()}
	return web.Serve(ln, srv, &web.FlagConfig{WebListenAddresses: &addrs, WebSystemdSocket: &systemd, WebConfigFile: &path}, d.log)
}

// probeHandler serves only /healthz and /readyz (PERSISTER_PROBE_ADDR), for
// kubelet probes that cannot present what the web config asks for.
func (d *Daemon) probeHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /readyz", d.readyz)
	return mux
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("ok\n"))
}

// probeServer listens on PERSISTER_PROBE_ADDR, or returns nil when unset.
// run serves until stop is called.
type probeServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

func (d *Daemon) listenProbe() (*probeServer, error) {
	addr := d.cfg.Web.ProbeAddr
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on PERSISTER_PROBE_ADDR %q: %w", addr, err)
	}
	d.setProbeAddr(ln.Addr().String())
	return &probeServer{
		srv:  &http.Server{Handler: d.probeHandler(), ReadHeaderTimeout: 5 * time.Second},
		ln:   ln,
		done: make(chan struct{}),
	}, nil
}

func (p *probeServer) run() error {
	defer close(p.done)
	if err := p.srv.Serve(p.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("probe http server: %w", err)
	}
	return nil
}

func (p *probeServer) stop(ctx context.Context) {
	_ = p.srv.Shutdown(ctx)
	<-p.done
}

// ProbeAddr returns the address the probe server listens on, or "".
func (d *Daemon) ProbeAddr() string { return d.addr(&d.probeAddr) }

func (d *Daemon) setProbeAddr(addr string) { d.setAddr(&d.probeAddr, addr) }
