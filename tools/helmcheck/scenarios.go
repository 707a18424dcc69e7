package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"helm.sh/helm/v3/pkg/chart"
)

// Scenario is one set of values the chart is linted and rendered with.
type Scenario struct {
	Name   string
	Files  []string // values files, relative to the chart directory
	AllEnv bool     // every environment name the daemon reads must be set
}

// Scenarios are the modes checked in CI: the defaults, both modes, and every
// optional part on (in each mode).
var Scenarios = []Scenario{
	{Name: "defaults"},
	{Name: "standalone", Files: []string{"ci/standalone-values.yaml"}},
	{Name: "sidecar", Files: []string{"ci/sidecar-values.yaml"}},
	{Name: "all-on", Files: []string{"ci/all-on-values.yaml"}, AllEnv: true},
	{Name: "sidecar-all-on", Files: []string{"ci/sidecar-all-on-values.yaml"}},
	{Name: "example-standalone", Files: []string{"examples/standalone-values.yaml"}},
	{Name: "example-sidecar", Files: []string{"examples/sidecar-values.yaml"}},
}

// Refusal is a values set the chart must refuse, with a part of the message.
type Refusal struct {
	Name   string
	Files  []string
	Values string // YAML merged over the files
	Want   string // substring of the error
}

// Refusals are combinations that would deploy something broken; rendering
// them must fail with a message saying why.
var Refusals = []Refusal{
	{"unknown mode", nil, "mode: daemonset", "value must be one of 'standalone', 'sidecar'"},
	{"keda in sidecar mode", []string{"ci/sidecar-values.yaml"}, "keda: {enabled: true}", "keda.enabled needs mode: standalone"},
	{"sidecar without pod selector", nil, "mode: sidecar", "sidecar.podSelector"},
	{"chronos without source", nil, "chronos: {enabled: true}", "chronos.name"},
	{"no MongoDB at all", nil, "mongo: {uri: {secretName: ''}}", "mongo.uri.secretName"},
	{"misspelt daemon setting", nil, "config: {batchsize: 10}", "batchsize"},
	{"duration as a number", nil, "config: {batchLinger: 20}", "/config/batchLinger"},
	{"duration without unit", nil, "config: {claimMinIdle: '60'}", "/config/claimMinIdle"},
	{"grace in seconds", nil, "config: {shutdownGraceSeconds: 25s}", "shutdownGraceSeconds"},
	{"no termination margin", nil, "terminationGraceMarginSeconds: 0", "terminationGraceMarginSeconds"},
	{"migrate with chart-made chronos", nil, "{migrate: {enabled: true}, chronos: {enabled: true, create: true, config: {}}}", "migrate.enabled"},
	{"inline redis credentials", nil, "redis: {url: 'redis://:secret@redis:6379/0'}", "redis/url"},
	{"probes on the protected port", nil, "web: {secretName: persister-web, probePort: 9464}", "web.probePort must differ from httpPort"},
	{"scrape user without password", nil, "serviceMonitor: {basicAuth: {username: {name: s, key: u}}}", "password"},
	{"unknown scrape scheme", nil, "serviceMonitor: {scheme: tcp}", "/serviceMonitor/scheme"},
	{"client certificate without key name", nil, "redis: {tls: {clientCert: {secretName: c, keyKey: ''}}}", "keyKey"},
}

// Checker checks one chart directory.
type Checker struct {
	ChartDir string
	RepoRoot string // for internal/config (the env names) and the Dockerfile
}

// Check lints and renders every scenario, checks the manifests, the refusals
// and the sidecar template inside a parent chart. It returns every problem.
func (c Checker) Check() error {
	env, err := DaemonEnv(c.RepoRoot)
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range Scenarios {
		if err := c.CheckScenario(s, env); err != nil {
			errs = append(errs, fmt.Errorf("scenario %s: %w", s.Name, err))
		}
	}
	for _, r := range Refusals {
		if err := c.CheckRefusal(r); err != nil {
			errs = append(errs, fmt.Errorf("refusal %q: %w", r.Name, err))
		}
	}
	if err := c.CheckSidecarInParent(env); err != nil {
		errs = append(errs, fmt.Errorf("sidecar template in a parent chart: %w", err))
	}
	return errors.Join(errs...)
}

// files reads the monitoring files the templates load (empty when missing:
// the scenarios enabling them then fail on the render).
func (c Checker) files() ChartFiles {
	var f ChartFiles
	f.Dashboard, _ = os.ReadFile(filepath.Join(c.ChartDir, "files", "dashboard.json"))
	f.Alerts, _ = os.ReadFile(filepath.Join(c.ChartDir, "files", "alerts.yaml"))
	return f
}

// render loads the chart and renders it with vals.
func (c Checker) render(vals map[string]any) (*chart.Chart, *Rendered, error) {
	ch, err := LoadChart(c.ChartDir)
	if err != nil {
		return nil, nil, err
	}
	r, err := Render(ch, vals)
	return ch, r, err
}

// CheckScenario lints, renders and checks one scenario.
func (c Checker) CheckScenario(s Scenario, env map[string]string) error {
	vals, err := LoadValues(c.ChartDir, s.Files...)
	if err != nil {
		return err
	}
	if err := Lint(c.ChartDir, vals); err != nil {
		return err
	}
	ch, r, err := c.render(vals)
	if err != nil {
		return err
	}
	e, err := ExpectFrom(ch, vals, s.AllEnv)
	if err != nil {
		return err
	}
	return CheckRendered(r, e, env, c.files())
}

// CheckRefusal renders a values set the chart must refuse.
func (c Checker) CheckRefusal(r Refusal) error {
	vals, err := LoadValues(c.ChartDir, r.Files...)
	if err != nil {
		return err
	}
	var over map[string]any
	if err := yaml.Unmarshal([]byte(r.Values), &over); err != nil {
		return fmt.Errorf("refusal values: %w", err)
	}
	vals = MergeValues(vals, over)
	ch, err := LoadChart(c.ChartDir)
	if err != nil {
		return err
	}
	_, err = Render(ch, vals)
	if err == nil {
		return errors.New("rendered without error, want a refusal")
	}
	if !strings.Contains(err.Error(), r.Want) {
		return fmt.Errorf("refused with %q, want a message containing %q", err, r.Want)
	}
	return nil
}

// parentChart is a stand-in for a user's Redis chart: a StatefulSet that
// adds the persister with the documented include from .Subcharts.
const parentStatefulSet = `apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ .Release.Name }}-redis-master
  namespace: {{ .Release.Namespace }}
spec:
  serviceName: {{ .Release.Name }}-redis-headless
  replicas: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: redis
      app.kubernetes.io/component: master
  template:
    metadata:
      labels:
        app.kubernetes.io/name: redis
        app.kubernetes.io/component: master
    spec:
      terminationGracePeriodSeconds: {{ include "persister.terminationGrace" .Subcharts.persister }}
      containers:
        - name: redis
          image: redis:7
          ports:
            - name: redis
              containerPort: 6379
        {{- include "persister.sidecarContainer" .Subcharts.persister | nindent 8 }}
      {{- with include "persister.sidecarVolumes" .Subcharts.persister | trim }}
      volumes:
        {{- . | nindent 8 }}
      {{- end }}
`

// renderInParent renders the stand-in parent chart with vals as the
// persister subchart's values and returns its Redis StatefulSet.
func (c Checker) renderInParent(vals map[string]any) (*Rendered, *appsv1.StatefulSet, error) {
	sub, err := LoadChart(c.ChartDir)
	if err != nil {
		return nil, nil, err
	}
	parent := &chart.Chart{
		Metadata: &chart.Metadata{APIVersion: chart.APIVersionV2, Name: "redis", Version: "1.0.0",
			Dependencies: []*chart.Dependency{{Name: "persister", Version: sub.Metadata.Version}}},
		Templates: []*chart.File{{Name: "templates/statefulset.yaml", Data: []byte(parentStatefulSet)}},
		Values:    map[string]any{},
	}
	parent.SetDependencies(sub)
	r, err := Render(parent, map[string]any{"persister": vals})
	if err != nil {
		return nil, nil, err
	}
	sts := r.ByKind("StatefulSet")
	if len(sts) != 1 {
		return nil, nil, fmt.Errorf("rendered %d StatefulSets, want 1", len(sts))
	}
	var p Problems
	var ss appsv1.StatefulSet
	if !decode(&p, sts[0], &ss) {
		return nil, nil, p.Err()
	}
	return r, &ss, nil
}

// CheckSidecarInParent renders a parent chart that has this chart as a
// dependency and includes persister.sidecarContainer in its Redis
// StatefulSet, with each sidecar scenario's values, and checks the container.
func (c Checker) CheckSidecarInParent(env map[string]string) error {
	sub, err := LoadChart(c.ChartDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range Scenarios {
		vals, err := LoadValues(c.ChartDir, s.Files...)
		if err != nil {
			return err
		}
		if mode, _ := vals["mode"].(string); mode != "sidecar" {
			continue
		}
		r, ss, err := c.renderInParent(vals)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.Name, err))
			continue
		}
		e, err := ExpectFrom(sub, vals, s.AllEnv)
		if err != nil {
			return err
		}
		var p Problems
		if n := len(ss.Spec.Template.Spec.Containers); n != 2 {
			p.Addf("StatefulSet: %d containers, want redis and the persister", n)
		}
		checkPod(&p, "StatefulSet "+ss.Name, ss.Spec.Template.Spec, e, env, podOpts{serve: true})
		if n := len(r.ByKind("Deployment")); n != 0 {
			p.Addf("sidecar mode rendered %d Deployments", n)
		}
		if err := p.Err(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.Name, err))
		}
	}
	if err := c.CheckBitnamiExample(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// CheckBitnamiExample checks that the container, volumes and grace period in
// examples/bitnami-redis-values.yaml are what persister.sidecarContainer
// renders from examples/sidecar-values.yaml (the image aside: users set it).
func (c Checker) CheckBitnamiExample() error {
	vals, err := LoadValues(c.ChartDir, "examples/sidecar-values.yaml")
	if err != nil {
		return err
	}
	_, ss, err := c.renderInParent(vals)
	if err != nil {
		return fmt.Errorf("examples/sidecar-values.yaml: %w", err)
	}
	raw, err := os.ReadFile(filepath.Join(c.ChartDir, "examples", "bitnami-redis-values.yaml"))
	if err != nil {
		return err
	}
	var doc struct {
		Master struct {
			TerminationGracePeriodSeconds int64              `json:"terminationGracePeriodSeconds"`
			Sidecars                      []corev1.Container `json:"sidecars"`
			ExtraVolumes                  []corev1.Volume    `json:"extraVolumes"`
		} `json:"master"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("examples/bitnami-redis-values.yaml: %w", err)
	}
	var p Problems
	spec := ss.Spec.Template.Spec
	var want corev1.Container
	if len(spec.Containers) == 2 {
		want = spec.Containers[1]
	}
	if len(doc.Master.Sidecars) != 1 {
		p.Addf("examples/bitnami-redis-values.yaml: %d master.sidecars, want 1", len(doc.Master.Sidecars))
	} else {
		got := doc.Master.Sidecars[0]
		got.Image, want.Image = "", ""
		if !reflect.DeepEqual(got, want) {
			gy, _ := yaml.Marshal(got)
			wy, _ := yaml.Marshal(want)
			p.Addf("examples/bitnami-redis-values.yaml: master.sidecars[0] differs from persister.sidecarContainer; got\n%s\nwant\n%s", gy, wy)
		}
	}
	if !reflect.DeepEqual(doc.Master.ExtraVolumes, spec.Volumes) {
		p.Addf("examples/bitnami-redis-values.yaml: master.extraVolumes %+v, want %+v", doc.Master.ExtraVolumes, spec.Volumes)
	}
	if tg := spec.TerminationGracePeriodSeconds; tg == nil || doc.Master.TerminationGracePeriodSeconds < *tg {
		p.Addf("examples/bitnami-redis-values.yaml: master.terminationGracePeriodSeconds %d, want at least %v", doc.Master.TerminationGracePeriodSeconds, ptrVal(tg))
	}
	return p.Err()
}
