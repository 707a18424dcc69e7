package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain silences the standard logger: Helm's lint logs every template
// failure there as well as returning it.
func TestMain(m *testing.M) {
	log.SetOutput(io.Discard)
	os.Exit(m.Run())
}

const (
	repoRoot = "../.."
	chartDir = "../../deploy/helm/persister"
)

// TestChart is the CI check: lint and render the real chart (with the real
// files/dashboard.json and files/alerts.yaml) in every mode, check the
// manifests, the refusals and the sidecar template in a parent chart.
func TestChart(t *testing.T) {
	c := Checker{ChartDir: chartDir, RepoRoot: repoRoot}
	if err := c.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestImage checks the Dockerfile and compiles its own go build line on the
// .dockerignore'd context (no container engine here), then checks the binary.
func TestImage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	dir := t.TempDir()
	c := Checker{ChartDir: chartDir, RepoRoot: repoRoot}
	if err := c.CheckImage(ctx, dir); err != nil {
		t.Fatal(err)
	}
	// The binary check can fail: a wrong version or a missing command is caught.
	bin := filepath.Join(dir, "persister")
	if err := CheckBinary(ctx, bin, "v9.9.9", []string{"run"}); err == nil || !strings.Contains(err.Error(), "version") {
		t.Errorf("CheckBinary with a wrong version: got %v, want a version problem", err)
	}
	if err := CheckBinary(ctx, bin, ImageVersion, []string{"no-such-command"}); err == nil {
		t.Error("CheckBinary with a missing command: got nil, want an error")
	}
}

// chartCopy copies the chart into a temporary directory. Where the
// monitoring files do not exist (yet), it writes small valid placeholders so
// that the copy passes before it is broken.
func chartCopy(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "persister")
	if err := CopyTree(chartDir, dir); err != nil {
		t.Fatal(err)
	}
	placeholders := map[string]string{
		"files/dashboard.json": `{"title": "persister", "panels": [{"type": "stat", "targets": [{"expr": "sum(persister_stream_lag_entries)"}]}]}`,
		"files/alerts.yaml":    "groups:\n  - name: persister\n    rules:\n      - alert: PersisterDown\n        expr: up{job=\"persister\"} == 0\n        annotations:\n          summary: \"{{ $labels.pod }} is down\"\n",
	}
	for name, text := range placeholders {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// edit replaces old with new in a file of the chart copy; old must occur.
func edit(t *testing.T, dir, file, old, new string) {
	t.Helper()
	p := filepath.Join(dir, file)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), old) {
		t.Fatalf("%s does not contain %q: the test is stale", file, old)
	}
	if err := os.WriteFile(p, []byte(strings.Replace(string(data), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBrokenChartFails proves the check fails on a broken chart: each case
// breaks a copy that passed, and the check must name the breakage.
func TestBrokenChartFails(t *testing.T) {
	good := chartCopy(t)
	if err := (Checker{ChartDir: good, RepoRoot: repoRoot}).Check(); err != nil {
		t.Fatalf("the unbroken copy must pass first: %v", err)
	}
	cases := []struct {
		name   string
		mutate func(t *testing.T, dir string)
		want   string
	}{
		{"template syntax error", func(t *testing.T, dir string) {
			edit(t, dir, "templates/service.yaml", "{{- if .Values.service.enabled }}", "{{- if .Values.service.enabled }}{{ if }}")
		}, "parse error"},
		{"nil pointer in a template", func(t *testing.T, dir string) {
			edit(t, dir, "templates/pdb.yaml", "spec:", "spec:\n  x: {{ .Values.nope.deeper }}")
		}, "nil pointer"},
		{"rendered YAML invalid", func(t *testing.T, dir string) {
			edit(t, dir, "templates/service.yaml", "spec:", "spec: [unclosed\n  x:")
		}, "service.yaml"},
		{"misspelt Kubernetes field", func(t *testing.T, dir string) {
			edit(t, dir, "templates/deployment.yaml", "terminationGracePeriodSeconds:", "terminationGracePeriodSecond:")
		}, "unknown field"},
		{"readiness probe path", func(t *testing.T, dir string) {
			edit(t, dir, "templates/_helpers.tpl", `{{- $path := "/readyz" }}`, `{{- $path := "/ready" }}`)
		}, `readinessProbe path "/ready"`},
		{"privilege escalation", func(t *testing.T, dir string) {
			edit(t, dir, "values.yaml", "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true")
		}, "allowPrivilegeEscalation"},
		{"root filesystem writable", func(t *testing.T, dir string) {
			edit(t, dir, "values.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false")
		}, "readOnlyRootFilesystem"},
		{"secret inlined", func(t *testing.T, dir string) {
			edit(t, dir, "templates/_helpers.tpl", "- name: MONGO_URI\n  valueFrom:\n    secretKeyRef:\n      name: {{ $v.mongo.uri.secretName | quote }}",
				"- name: MONGO_URI\n  value: {{ $v.mongo.uri.secretName | quote }}\n  valueFrom:\n    secretKeyRef:\n      name: {{ $v.mongo.uri.secretName | quote }}")
		}, "MONGO_URI must come from a secretKeyRef"},
		{"wrong secret key", func(t *testing.T, dir string) {
			edit(t, dir, "templates/_helpers.tpl", `key: {{ required "redis.password.secretKey`, `key: password{{ required "redis.password.secretKey`)
		}, "env REDIS_PASSWORD from Secret"},
		{"grace not above the daemon's", func(t *testing.T, dir string) {
			edit(t, dir, "templates/_helpers.tpl", "{{- add $grace $margin }}", "{{- $grace }}")
		}, "terminationGracePeriodSeconds"},
		{"daemon setting dropped", func(t *testing.T, dir string) {
			edit(t, dir, "ci/all-on-values.yaml", "  workers: 2\n", "")
		}, "env PERSISTER_WORKERS (read by the daemon) is never set by the chart: add config.workers"},
		{"setting the daemon does not read", func(t *testing.T, dir string) {
			edit(t, dir, "templates/_helpers.tpl", `(ne $key "shutdownGraceSeconds")`, `(ne $key "nothing")`)
		}, "env PERSISTER_SHUTDOWN_GRACE_SECONDS is not read by the daemon"},
		{"consumer name not the pod name", func(t *testing.T, dir string) {
			edit(t, dir, "templates/_helpers.tpl", "fieldPath: metadata.name", "fieldPath: metadata.uid")
		}, "PERSISTER_CONSUMER must come from the pod name"},
		{"sidecar not on localhost", func(t *testing.T, dir string) {
			edit(t, dir, "templates/_helpers.tpl", `{{- "redis://127.0.0.1:6379/0" }}`, `{{- "redis://redis:6379/0" }}`)
		}, "want Redis on localhost"},
		{"dashboard not JSON", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "files/dashboard.json"), []byte("{not json"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "files/dashboard.json is not valid JSON"},
		{"dashboard missing", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "files/dashboard.json")); err != nil {
				t.Fatal(err)
			}
		}, "files/dashboard.json is missing"},
		{"dashboard label", func(t *testing.T, dir string) {
			edit(t, dir, "templates/dashboard-configmap.yaml", "{{- with .Values.dashboard.labels }}", "{{- with dict }}")
		}, "Grafana sidecar discovery"},
		{"alerts without groups", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "files/alerts.yaml"), []byte("rules: []\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "files/alerts.yaml has no rule groups"},
		{"rule groups dropped", func(t *testing.T, dir string) {
			edit(t, dir, "templates/prometheusrule.yaml", "{{- toYaml $rules.groups | nindent 4 }}", "[]")
		}, "spec.groups is empty"},
		{"service selecting nothing", func(t *testing.T, dir string) {
			edit(t, dir, "templates/service.yaml", "targetPort: persister-http", "targetPort: http")
		}, "targetPort http"},
		{"keda scaling the wrong object", func(t *testing.T, dir string) {
			edit(t, dir, "templates/scaledobject.yaml", "name: {{ include \"persister.fullname\" . }}\n  minReplicaCount", "name: other\n  minReplicaCount")
		}, "scaleTargetRef"},
		{"bitnami example drifted", func(t *testing.T, dir string) {
			edit(t, dir, "examples/bitnami-redis-values.yaml", `value: "25s"`, `value: "30s"`)
		}, "master.sidecars[0] differs from persister.sidecarContainer"},
		{"sidecar template without its volumes", func(t *testing.T, dir string) {
			edit(t, dir, "templates/_helpers.tpl", "{{- include \"persister.volumes\" . }}\n{{- end }}", "{{- end }}")
		}, "has no volume"},
		{"a refusal accepted", func(t *testing.T, dir string) {
			edit(t, dir, "templates/validate.yaml", `{{- if and (eq .Values.mode "sidecar") .Values.keda.enabled }}`, `{{- if false }}`)
		}, `refusal "keda in sidecar mode": rendered without error`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := chartCopy(t)
			tc.mutate(t, dir)
			err := (Checker{ChartDir: dir, RepoRoot: repoRoot}).Check()
			if err == nil {
				t.Fatal("Check passed on a broken chart")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check failed without naming the breakage: got\n%v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestDaemonEnv(t *testing.T) {
	env, err := DaemonEnv(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	for name, def := range map[string]string{"PERSISTER_HTTP_ADDR": ":9464", "REDIS_PASSWORD": "", "MONGO_URI": "mongodb://127.0.0.1:27017", "PERSISTER_SHUTDOWN_GRACE": "25s"} {
		got, ok := env[name]
		if !ok || got != def {
			t.Errorf("DaemonEnv()[%s] = %q, %v; want %q", name, got, ok, def)
		}
	}
}

// TestValuesCommented keeps values.yaml commented line by line: every key
// has a comment line directly above it.
func TestValuesCommented(t *testing.T) {
	if got := uncommentedKeys("# a\na: 1\nb:\n  # c\n  c: 2\n  d: 3\n"); strings.Join(got, ",") != "3:b,6:d" {
		t.Errorf("uncommentedKeys on a sample: got %v, want [3:b 6:d]", got)
	}
	text, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range uncommentedKeys(string(text)) {
		t.Errorf("values.yaml line:key %s has no comment line above it", k)
	}
}

// uncommentedKeys returns "line:key" for each key of a YAML text that has no
// comment line directly above it.
func uncommentedKeys(text string) []string {
	var out []string
	commented := false
	for i, line := range strings.Split(text, "\n") {
		s := strings.TrimSpace(line)
		switch {
		case s == "":
			commented = false
		case strings.HasPrefix(s, "#"):
			commented = true
		default:
			if key, _, ok := strings.Cut(s, ":"); ok && !strings.HasPrefix(s, "- ") && !strings.ContainsAny(key, " \"'") && !commented {
				out = append(out, fmt.Sprintf("%d:%s", i+1, key))
			}
			commented = false
		}
	}
	return out
}
