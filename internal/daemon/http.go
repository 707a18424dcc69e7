package daemon

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func (d *Daemon) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{Registry: d.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
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

// Ready checks Redis and every tenant's database and write state.
func (d *Daemon) Ready(ctx context.Context) Readiness {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	r := Readiness{Ready: true, Redis: "ok", Tenants: map[string]string{}}
	if err := d.rdb.Ping(ctx).Err(); err != nil {
		r.Ready, r.Redis = false, "unreachable: "+err.Error()
	}
	ids := make([]string, 0, len(d.tenants))
	for id := range d.tenants {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		st := d.tenants[id].batcher.State()
		switch {
		case st.Halted:
			r.Ready, r.Tenants[id] = false, "halted: "+st.LastErr.Error()
		case d.sink.Ping(ctx, id) != nil:
			r.Ready, r.Tenants[id] = false, "database unreachable"
		case st.LastErr != nil:
			r.Ready, r.Tenants[id] = false, "writes failing: "+st.LastErr.Error()
		default:
			r.Tenants[id] = "ok"
		}
	}
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
