package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chronow/persister/internal/e2e"
	"github.com/chronow/persister/internal/publisher"
	"github.com/chronow/persister/internal/testenv"
)

// startPrometheus runs a real Prometheus scraping target every second with
// the rule files loaded, and returns its base URL. Without the binary the
// test is skipped, except in CI, where it fails (scripts/test.sh installs
// Debian's prometheus package).
func startPrometheus(t *testing.T, target string, ruleFiles ...string) string {
	t.Helper()
	return startPrometheusJob(t, fmt.Sprintf("    static_configs:\n      - targets: [%q]\n", target), ruleFiles...)
}

// prometheusTool finds name, a program of the Debian package prometheus.
// Where it is missing the test fails in CI (scripts/test.sh installs it);
// either way ok is false and the caller skips what needs it.
func prometheusTool(t *testing.T, name string) (bin string, ok bool) {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err == nil {
		return bin, true
	}
	if os.Getenv("CI") != "" {
		t.Errorf("%s not installed; scripts/test.sh installs it (apt-get install prometheus)", name)
	}
	return "", false
}

// startPrometheusJob is startPrometheus with the persister job's settings
// (static_configs and any scheme, tls_config, basic_auth) given as YAML
// indented for the job.
func startPrometheusJob(t *testing.T, job string, ruleFiles ...string) string {
	t.Helper()
	bin, ok := prometheusTool(t, "prometheus")
	if !ok {
		t.Skip("prometheus not installed (apt-get install prometheus); run scripts/test.sh")
	}
	dir := t.TempDir()
	var rules strings.Builder
	for _, f := range ruleFiles {
		fmt.Fprintf(&rules, "  - %q\n", f)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
%sscrape_configs:
  - job_name: persister
%s`, rules.String(), job)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("prometheus log:\n%s", b)
		}
	})
	base := "http://" + addr
	e2e.Eventually(t, 60*time.Second, "prometheus ready", func() (bool, string) {
		resp, err := http.Get(base + "/-/ready")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	return base
}

// promAPI GETs a Prometheus API path and decodes "data" into out.
func promAPI(base, path string, q url.Values, out any) error {
	resp, err := http.Get(base + path + "?" + q.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		return fmt.Errorf("%s: %s: %w", path, resp.Status, err)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s %v: %s", path, q, env.Error)
	}
	return json.Unmarshal(env.Data, out)
}

type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

func alertStates(base string) (map[string]string, error) {
	var data struct {
		Alerts []promAlert `json:"alerts"`
	}
	if err := promAPI(base, "/api/v1/alerts", nil, &data); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, a := range data.Alerts {
		if out[a.Labels["alertname"]] != "firing" {
			out[a.Labels["alertname"]] = a.State
		}
	}
	return out, nil
}

// A real Prometheus scrapes the daemon with alerts.yaml loaded: every rule
// evaluates without error, every dashboard query returns data, the loss
// alert fires when entries are trimmed before they are stored, and the
// down alert goes pending when the daemon stops.
func TestAlertsAndDashboardInPrometheus(t *testing.T) {
	ctx := context.Background()
	rs, ms, rdb, _ := e2e.StartServers(t)
	tenants := []string{"prom-a"}
	const stream = "cw:prom-a:default:topic:orders"
	pub := &publisher.Publisher{RDB: rdb, Prefix: "cw:"}
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	env := e2e.Env(t, rs.URL, ms.URI, tenants, map[string]string{
		"PERSISTER_METRICS_INTERVAL": "200ms",
		"PERSISTER_HTTP_ADDR":        httpAddr,
	})
	publishN := func(n int) {
		if _, err := pub.PublishBatch(ctx, obsMessages(tenants, []string{"orders"}, n)); err != nil {
			t.Fatal(err)
		}
	}
	storedN := func(want float64) {
		e2e.Eventually(t, 60*time.Second, fmt.Sprintf("%v stored", want), func() (bool, string) {
			s, err := scrapeMetrics(httpAddr)
			if err != nil {
				return false, err.Error()
			}
			got := s.sum("persister_entries_stored_total", "collection", "messages")
			return got == want, fmt.Sprintf("stored %v", got)
		})
	}

	run := e2e.Start(t, env)
	waitAddr(t, run)
	prom := startPrometheus(t, httpAddr, filepath.Join(testenv.RepoRoot(t), alertsPath))
	publishN(100)
	storedN(100)

	// Every rule loaded and evaluates cleanly.
	e2e.Eventually(t, 30*time.Second, "every alert rule evaluated without error", func() (bool, string) {
		var data struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		}
		if err := promAPI(prom, "/api/v1/rules", nil, &data); err != nil {
			return false, err.Error()
		}
		n, bad := 0, []string{}
		for _, g := range data.Groups {
			for _, r := range g.Rules {
				n++
				if r.Health != "ok" {
					bad = append(bad, fmt.Sprintf("%s: %s %s", r.Name, r.Health, r.LastError))
				}
			}
		}
		return n == len(parseAlerts(t, string(readRepoFile(t, alertsPath)))) && len(bad) == 0,
			fmt.Sprintf("%d rules, not ok: %v", n, bad)
	})

	// Every dashboard query returns at least one series once data is in.
	exprs, varMetrics := dashboardExprs(t, readRepoFile(t, dashboardPath))
	repl := strings.NewReplacer("$__rate_interval", "30s", "$__range", "5m", "$tenant", ".*")
	e2e.Eventually(t, 60*time.Second, "every dashboard query returns data", func() (bool, string) {
		var empty []string
		for _, e := range exprs {
			var data struct {
				Result []json.RawMessage `json:"result"`
			}
			if err := promAPI(prom, "/api/v1/query", url.Values{"query": {repl.Replace(e)}}, &data); err != nil {
				return false, err.Error()
			}
			if len(data.Result) == 0 {
				empty = append(empty, e)
			}
		}
		return len(empty) == 0, fmt.Sprintf("%d of %d queries empty: %q", len(empty), len(exprs), empty)
	})
	for _, m := range varMetrics {
		var vals []string
		if err := promAPI(prom, "/api/v1/label/tenant/values", url.Values{"match[]": {m}}, &vals); err != nil {
			t.Fatal(err)
		}
		if strings.Join(vals, ",") != "prom-a" {
			t.Errorf("tenant variable values from %s = %v, want [prom-a]", m, vals)
		}
	}
	states, err := alertStates(prom)
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 0 {
		t.Errorf("alerts active on a healthy daemon: %v", states)
	}

	// Entries trimmed while the daemon is down: lost, and the alert fires.
	if err := run.Stop(); err != nil {
		t.Fatal(err)
	}
	e2e.Eventually(t, 30*time.Second, "PersisterDown pending while the daemon is stopped", func() (bool, string) {
		st, err := alertStates(prom)
		return err == nil && st["PersisterDown"] == "pending", fmt.Sprintf("%v %v", st, err)
	})
	publishN(300)
	if err := rdb.XTrimMaxLen(ctx, stream, 50).Err(); err != nil {
		t.Fatal(err)
	}
	run = e2e.Start(t, env)
	waitAddr(t, run)
	e2e.Eventually(t, 60*time.Second, "PersisterEntriesLost firing with 250 lost", func() (bool, string) {
		st, err := alertStates(prom)
		if err != nil {
			return false, err.Error()
		}
		var data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		}
		if err := promAPI(prom, "/api/v1/query", url.Values{"query": {`sum(persister_entries_lost_total)`}}, &data); err != nil {
			return false, err.Error()
		}
		lost := ""
		if len(data.Result) == 1 {
			lost, _ = data.Result[0].Value[1].(string)
		}
		return st["PersisterEntriesLost"] == "firing" && lost == "250" && st["PersisterDown"] == "",
			fmt.Sprintf("alerts %v, lost %q", st, lost)
	})
	storedN(50)
	if err := run.Stop(); err != nil {
		t.Fatal(err)
	}
}
