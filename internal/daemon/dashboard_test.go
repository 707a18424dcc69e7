package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chronow/persister/internal/e2e"
	"github.com/chronow/persister/internal/publisher"
	"github.com/chronow/persister/internal/testenv"
)

// Files the Helm chart packages (deploy/helm/persister/files).
const (
	dashboardPath = "deploy/helm/persister/files/dashboard.json"
	alertsPath    = "deploy/helm/persister/files/alerts.yaml"
)

// externalMetrics are names a rule may use that Prometheus itself makes.
var externalMetrics = map[string]bool{"up": true}

var (
	reGrafanaVar = regexp.MustCompile(`\$\{?\w+\}?`)
	reString     = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	reMatchers   = regexp.MustCompile(`\{[^}]*\}`)
	reRange      = regexp.MustCompile(`\[[^\]]*\]`)
	reGrouping   = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	reIdent      = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	promWords    = map[string]bool{
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
		"bool": true, "and": true, "or": true, "unless": true, "offset": true, "atan2": true, "inf": true, "nan": true,
	}
)

// metricNames returns the metric names a PromQL expression selects: every
// identifier that is not a function, keyword, label name, string, range or
// number. Grafana variables are replaced first.
func metricNames(expr string) []string {
	e := reGrafanaVar.ReplaceAllString(expr, "1")
	e = reString.ReplaceAllString(e, `""`)
	e = reMatchers.ReplaceAllString(e, " ")
	e = reRange.ReplaceAllString(e, " ")
	e = reGrouping.ReplaceAllString(e, " ")
	var out []string
	for _, loc := range reIdent.FindAllStringIndex(e, -1) {
		word := e[loc[0]:loc[1]]
		if loc[0] > 0 && (e[loc[0]-1] >= '0' && e[loc[0]-1] <= '9' || e[loc[0]-1] == '.') {
			continue // part of a number or duration (1e3, 5m)
		}
		if promWords[strings.ToLower(word)] {
			continue
		}
		if rest := strings.TrimLeft(e[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue // a function or aggregation
		}
		out = append(out, word)
	}
	return out
}

func TestMetricNamesLexer(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want string
	}{
		{`sum by (tenant, kind) (rate(persister_entries_stored_total{tenant=~"$tenant"}[$__rate_interval]))`, "persister_entries_stored_total"},
		{`histogram_quantile(0.99, sum by (le) (rate(a_bucket[5m])))`, "a_bucket"},
		{`max by (t) (x) > 1000 and max by (t) (delta(x[15m])) > 0`, "x x"},
		{`time() - ts_seconds > 300`, "ts_seconds"},
		{`count(max by (tenant) (h{tenant=~"a|b"}) > 0) or vector(0)`, "h"},
		{`absent(up{job=~".*persister.*"}) offset 5m`, "up"},
		{`1e3 * foo / on (instance) group_left (version) bar`, "foo bar"},
	} {
		if got := strings.Join(metricNames(tc.expr), " "); got != tc.want {
			t.Errorf("metricNames(%q) = %q, want %q", tc.expr, got, tc.want)
		}
	}
}

// dashboardExprs returns every target expression and every metric named by
// a template variable query of a Grafana dashboard.
func dashboardExprs(t *testing.T, raw []byte) (exprs []string, varMetrics []string) {
	t.Helper()
	var d map[string]any
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardPath, err)
	}
	for _, k := range []string{"title", "uid", "panels", "templating", "schemaVersion"} {
		if _, ok := d[k]; !ok {
			t.Errorf("dashboard has no %q", k)
		}
	}
	ids := map[float64]bool{}
	var walkPanels func([]any)
	walkPanels = func(ps []any) {
		for _, p := range ps {
			pm, _ := p.(map[string]any)
			if id, _ := pm["id"].(float64); ids[id] {
				t.Errorf("panel id %v used twice", id)
			} else {
				ids[id] = true
			}
			if _, ok := pm["gridPos"].(map[string]any); !ok {
				t.Errorf("panel %q has no gridPos", pm["title"])
			}
			if sub, ok := pm["panels"].([]any); ok {
				walkPanels(sub)
			}
			if pm["type"] == "row" {
				continue
			}
			targets, _ := pm["targets"].([]any)
			if len(targets) == 0 {
				t.Errorf("panel %q has no targets", pm["title"])
			}
			for _, tg := range targets {
				expr, _ := tg.(map[string]any)["expr"].(string)
				if strings.TrimSpace(expr) == "" {
					t.Errorf("panel %q has a target without expr", pm["title"])
				}
				exprs = append(exprs, expr)
			}
		}
	}
	panels, _ := d["panels"].([]any)
	walkPanels(panels)
	reLabelValues := regexp.MustCompile(`label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,`)
	tmpl, _ := d["templating"].(map[string]any)
	vars, _ := tmpl["list"].([]any)
	for _, v := range vars {
		vm, _ := v.(map[string]any)
		if vm["type"] != "query" {
			continue
		}
		q := vm["query"]
		if qm, ok := q.(map[string]any); ok {
			q = qm["query"]
		}
		qs, _ := q.(string)
		m := reLabelValues.FindStringSubmatch(qs)
		if m == nil {
			t.Errorf("template variable %q: query %q is not label_values(metric, label)", vm["name"], qs)
			continue
		}
		varMetrics = append(varMetrics, m[1])
	}
	return exprs, varMetrics
}

// alertRule is one rule of alerts.yaml as far as the checks need it.
type alertRule struct {
	name, expr, severity, summary, runbook string
}

// parseAlerts reads the rule file line by line (the main module has no YAML
// library): "- alert:" starts a rule; "expr:" is a scalar or a "|" block.
func parseAlerts(t *testing.T, raw string) []alertRule {
	t.Helper()
	var rules []alertRule
	var cur *alertRule
	lines := strings.Split(raw, "\n")
	indent := func(s string) int { return len(s) - len(strings.TrimLeft(s, " ")) }
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		trim := strings.TrimSpace(line)
		key, val, ok := strings.Cut(strings.TrimPrefix(trim, "- "), ":")
		if !ok || strings.HasPrefix(trim, "#") {
			continue
		}
		val = strings.TrimSpace(val)
		if len(val) >= 2 && (val[0] == '"' && val[len(val)-1] == '"') {
			u, err := strconv.Unquote(val)
			if err != nil {
				t.Fatalf("%s line %d: %v", alertsPath, i+1, err)
			}
			val = u
		}
		switch key {
		case "alert":
			rules = append(rules, alertRule{name: val})
			cur = &rules[len(rules)-1]
		case "expr":
			if cur == nil {
				t.Fatalf("%s line %d: expr outside a rule", alertsPath, i+1)
			}
			if val == "|" || val == "|-" || val == ">" {
				var b []string
				for i+1 < len(lines) && (strings.TrimSpace(lines[i+1]) == "" || indent(lines[i+1]) > indent(line)) {
					i++
					b = append(b, strings.TrimSpace(lines[i]))
				}
				val = strings.TrimSpace(strings.Join(b, "\n"))
			}
			cur.expr = val
		case "severity":
			cur.severity = val
		case "summary":
			cur.summary = val
		case "runbook":
			cur.runbook = val
		}
	}
	return rules
}

func readRepoFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// exported reports whether name is a family of the scrape or a histogram
// or summary series of one.
func (s obsScrape) exported(name string) bool {
	if _, ok := s.types[name]; ok {
		return true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok {
			if typ := s.types[base]; typ == "histogram" || (typ == "summary" && suf != "_bucket") {
				return true
			}
		}
	}
	return false
}

// Every metric the dashboard and the alert rules name is one a running
// daemon really exports, on a live scrape after some traffic.
func TestDashboardAndAlertsUseExportedMetrics(t *testing.T) {
	ctx := context.Background()
	rs := testenv.StartRedis(t)
	ms := testenv.StartMongo(t)
	tenants := []string{"dash-a", "dash-b"}
	pub := &publisher.Publisher{RDB: rs.Client(t), Prefix: "cw:"}
	if _, err := pub.PublishBatch(ctx, obsMessages(tenants, []string{"orders", "audit"}, 40)); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.PublishDeadLetter(ctx, publisher.DeadLetter{
		Tenant: tenants[0], Namespace: "default", Topic: "orders", OriginalMsgID: "1-0", Payload: `{}`, Reason: "test", Deliveries: 3, FailedAt: time.Now(),
	}); err != nil {
		t.Fatal(err)
	}
	run := e2e.Start(t, e2e.Env(t, rs.URL, ms.URI, tenants, map[string]string{"PERSISTER_METRICS_INTERVAL": "200ms"}))
	addr := waitAddr(t, run)
	var s obsScrape
	e2e.Eventually(t, 60*time.Second, "40 stored and lag measured", func() (bool, string) {
		var err error
		s, err = scrapeMetrics(addr)
		if err != nil {
			return false, err.Error()
		}
		stored := s.sum("persister_entries_stored_total", "collection", "messages")
		return stored == 40 && s.max("persister_lag_collected_timestamp_seconds") > 0, fmt.Sprintf("stored %v", stored)
	})

	check := func(where, expr string, names []string) {
		if len(names) == 0 {
			t.Errorf("%s: %q names no metric", where, expr)
		}
		for _, n := range names {
			if !s.exported(n) && !externalMetrics[n] {
				t.Errorf("%s: %q names %s, which the daemon does not export", where, expr, n)
			}
		}
	}
	used := map[string]bool{}
	note := func(names []string) {
		for _, n := range names {
			used[strings.TrimSuffix(n, "_bucket")] = true
		}
	}

	exprs, varMetrics := dashboardExprs(t, readRepoFile(t, dashboardPath))
	for _, e := range exprs {
		check("dashboard", e, metricNames(e))
		note(metricNames(e))
	}
	check("dashboard variable", strings.Join(varMetrics, ","), varMetrics)
	for _, want := range []string{
		"persister_stream_lag_entries", "persister_stream_pending_entries", "persister_oldest_unacked_age_seconds",
		"persister_entries_stored_total", "persister_store_latency_seconds", "persister_write_errors_total",
		"persister_entries_dead_lettered_total", "persister_entries_lost_total", "persister_streams",
		"persister_tenant_halted", "persister_build_info",
		"persister_write_concurrency_limit", "persister_writes_in_flight", "persister_write_latency_floor_seconds",
	} {
		if !used[want] {
			t.Errorf("dashboard does not show %s", want)
		}
	}

	rules := parseAlerts(t, string(readRepoFile(t, alertsPath)))
	readme := observabilitySection(t, string(readRepoFile(t, "README.md")))
	alertUsed := map[string]bool{}
	for _, r := range rules {
		check("alert "+r.name, r.expr, metricNames(r.expr))
		for _, n := range metricNames(r.expr) {
			alertUsed[n] = true
		}
		if r.severity == "" || r.summary == "" || r.runbook == "" {
			t.Errorf("alert %s: severity %q summary %q runbook %q; all three are required", r.name, r.severity, r.summary, r.runbook)
		}
		if !strings.Contains(readme, r.name) || !strings.Contains(readme, r.runbook) {
			t.Errorf("README Observability section lacks alert %s with its runbook line %q", r.name, r.runbook)
		}
	}
	for _, want := range []string{
		"up", "persister_stream_lag_entries", "persister_oldest_unacked_age_seconds",
		"persister_entries_lost_total", "persister_write_errors_total", "persister_tenant_halted",
	} {
		if !alertUsed[want] {
			t.Errorf("no alert rule uses %s", want)
		}
	}
	t.Logf("checked %d dashboard expressions and %d alert rules against a scrape of %d families", len(exprs), len(rules), len(s.types))

	promtoolCheck(t, exprs, alertsPath)
	if code, body := getStatus(addr, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz = %d %s, want 200", code, body)
	}
}

// observabilitySection returns README.md's "## Observability" section.
func observabilitySection(t *testing.T, readme string) string {
	t.Helper()
	_, after, ok := strings.Cut(readme, "\n## Observability")
	if !ok {
		t.Fatal(`README.md has no "## Observability" section`)
	}
	if i := strings.Index(after, "\n## "); i >= 0 {
		after = after[:i]
	}
	return after
}

// promtoolCheck checks PromQL syntax with promtool (Debian package
// prometheus; required in CI): the alert file as it is, and every dashboard
// expression as a recording rule with Grafana's variables filled in.
func promtoolCheck(t *testing.T, exprs []string, alerts string) {
	t.Helper()
	bin, ok := prometheusTool(t, "promtool")
	if !ok {
		t.Log("promtool not installed: PromQL syntax not checked (names were)")
		return
	}
	repl := strings.NewReplacer("$__rate_interval", "1m", "$__range", "1h", "$tenant", ".*")
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range exprs {
		fmt.Fprintf(&b, "      - record: dashboard_expr_%d\n        expr: %s\n", i, strconv.Quote(repl.Replace(e)))
	}
	tmp := filepath.Join(t.TempDir(), "dashboard-rules.yaml")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{filepath.Join(testenv.RepoRoot(t), alerts), tmp} {
		out, err := exec.Command(bin, "check", "rules", f).CombinedOutput()
		if err != nil {
			t.Errorf("promtool check rules %s: %v\n%s", filepath.Base(f), err, out)
		}
	}
}
