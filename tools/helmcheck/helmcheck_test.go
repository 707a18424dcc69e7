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
	// A case either replaces edit[0] by edit[1] in file, or calls mutate.
	cases := []struct {
		name   string
		file   string
		edit   [2]string
		mutate func(t *testing.T, dir string)
		want   string
	}{
		{name: "template syntax error", file: "templates/service.yaml", edit: [2]string{"{{- if .Values.service.enabled }}", "{{- if .Values.service.enabled }}{{ if }}"}, want: "parse error"},
		{name: "nil pointer in a template", file: "templates/pdb.yaml", edit: [2]string{"spec:", "spec:\n  x: {{ .Values.nope.deeper }}"}, want: "nil pointer"},
		{name: "rendered YAML invalid", file: "templates/service.yaml", edit: [2]string{"spec:", "spec: [unclosed\n  x:"}, want: "service.yaml"},
		{name: "misspelt Kubernetes field", file: "templates/deployment.yaml", edit: [2]string{"terminationGracePeriodSeconds:", "terminationGracePeriodSecond:"}, want: "unknown field"},
		{name: "readiness probe path", file: "templates/_helpers.tpl", edit: [2]string{`{{- $path := "/readyz" }}`, `{{- $path := "/ready" }}`}, want: `readinessProbe path "/ready"`},
		{name: "privilege escalation", file: "values.yaml", edit: [2]string{"allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true"}, want: "allowPrivilegeEscalation"},
		{name: "root filesystem writable", file: "values.yaml", edit: [2]string{"readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false"}, want: "readOnlyRootFilesystem"},
		{name: "secret inlined", file: "templates/_helpers.tpl", edit: [2]string{"- name: MONGO_URI\n  valueFrom:\n    secretKeyRef:\n      name: {{ $v.mongo.uri.secretName | quote }}",
			"- name: MONGO_URI\n  value: {{ $v.mongo.uri.secretName | quote }}\n  valueFrom:\n    secretKeyRef:\n      name: {{ $v.mongo.uri.secretName | quote }}"}, want: "MONGO_URI must come from a secretKeyRef"},
		{name: "wrong secret key", file: "templates/_helpers.tpl", edit: [2]string{`key: {{ required "redis.password.secretKey`, `key: password{{ required "redis.password.secretKey`}, want: "env REDIS_PASSWORD from Secret"},
		{name: "grace not above the daemon's", file: "templates/_helpers.tpl", edit: [2]string{"{{- add $grace $margin }}", "{{- $grace }}"}, want: "terminationGracePeriodSeconds"},
		{name: "daemon setting dropped", file: "ci/all-on-values.yaml", edit: [2]string{"  workers: 2\n", ""}, want: "env PERSISTER_WORKERS (read by the daemon) is never set by the chart: add config.workers"},
		{name: "setting the daemon does not read", file: "templates/_helpers.tpl", edit: [2]string{`(ne $key "shutdownGraceSeconds")`, `(ne $key "nothing")`}, want: "env PERSISTER_SHUTDOWN_GRACE_SECONDS is not read by the daemon"},
		{name: "consumer name not the pod name", file: "templates/_helpers.tpl", edit: [2]string{"fieldPath: metadata.name", "fieldPath: metadata.uid"}, want: "PERSISTER_CONSUMER must come from the pod name"},
		{name: "sidecar not on localhost", file: "templates/_helpers.tpl", edit: [2]string{`{{- "redis://127.0.0.1:6379/0" }}`, `{{- "redis://redis:6379/0" }}`}, want: "want Redis on localhost"},
		{name: "dashboard not JSON", mutate: func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "files/dashboard.json"), []byte("{not json"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, want: "files/dashboard.json is not valid JSON"},
		{name: "dashboard missing", mutate: func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "files/dashboard.json")); err != nil {
				t.Fatal(err)
			}
		}, want: "files/dashboard.json is missing"},
		{name: "dashboard label", file: "templates/dashboard-configmap.yaml", edit: [2]string{"{{- with .Values.dashboard.labels }}", "{{- with dict }}"}, want: "Grafana sidecar discovery"},
		{name: "alerts without groups", mutate: func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "files/alerts.yaml"), []byte("rules: []\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, want: "files/alerts.yaml has no rule groups"},
		{name: "rule groups dropped", file: "templates/prometheusrule.yaml", edit: [2]string{"{{- toYaml $rules.groups | nindent 4 }}", "[]"}, want: "spec.groups is empty"},
		{name: "service selecting nothing", file: "templates/service.yaml", edit: [2]string{"targetPort: persister-http", "targetPort: http"}, want: "targetPort http"},
		{name: "keda scaling the wrong object", file: "templates/scaledobject.yaml", edit: [2]string{"name: {{ include \"persister.fullname\" . }}\n  minReplicaCount", "name: other\n  minReplicaCount"}, want: "scaleTargetRef"},
		{name: "bitnami example drifted", file: "examples/bitnami-redis-values.yaml", edit: [2]string{`value: "25s"`, `value: "30s"`}, want: "master.sidecars[0] differs from persister.sidecarContainer"},
		{name: "sidecar template without its volumes", file: "templates/_helpers.tpl", edit: [2]string{"{{- include \"persister.volumes\" . }}\n{{- end }}", "{{- end }}"}, want: "has no volume"},
		{name: "a refusal accepted", file: "templates/validate.yaml", edit: [2]string{`{{- if and (eq .Values.mode "sidecar") .Values.keda.enabled }}`, `{{- if false }}`}, want: `refusal "keda in sidecar mode": rendered without error`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := chartCopy(t)
			if tc.mutate != nil {
				tc.mutate(t, dir)
			} else {
				edit(t, dir, tc.file, tc.edit[0], tc.edit[1])
			}
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
