package daemon

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func (d *Daemon) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{Registry: d.reg}))
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /readyz", d.readyz)
	if d.cfg.Persister.PPROF {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// Readiness is the body of /readyz.
type Readiness struct {
	Ready   bool              `json:"ready"`
	Redis   string            `json:"redis"`
	Tenants map[string]string `json:"tenants"`
}

// Ready checks Redis and every tenant's database and write state. Each
// check runs concurrently with its own timeout, so one server that hangs
// (SIGSTOP, network partition) does not make the others look down.
func (d *Daemon) Ready(ctx context.Context) Readiness {
	const timeout = 2 * time.Second
	r := Readiness{Ready: true, Redis: "ok", Tenants: map[string]string{}}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		pctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if err := d.rdb.Ping(pctx).Err(); err != nil {
			mu.Lock()
			r.Ready, r.Redis = false, "unreachable: "+err.Error()
			mu.Unlock()
		} else if s := d.refusals.Status(); s != "" {
			mu.Lock()
			r.Ready, r.Redis = false, s
			mu.Unlock()
		}
	}()
	for id, tp := range d.tenants {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			st := tp.State()
			status := "ok"
			switch {
			case st.Halted:
				status = "halted: " + st.LastErr.Error()
			case d.sink.Ping(pctx, id) != nil:
				status = "database unreachable"
			case st.LastErr != nil:
				status = "writes failing: " + st.LastErr.Error()
			}
			mu.Lock()
			r.Tenants[id] = status
			if status != "ok" {
				r.Ready = false
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return r
}

func (d *Daemon) readyz(w http.ResponseWriter, req *http.Request) {
	r := d.Ready(req.Context())
	w.Header().Set("Content-Type", "application/json")
	if !r.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(r)
}
