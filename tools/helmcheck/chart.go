package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/releaseutil"
	"sigs.k8s.io/yaml"
)

// Release name, namespace and Kubernetes version every render uses.
const (
	releaseName = "chronow"
	namespace   = "chronow"
	kubeVersion = "v1.31.0"
)

// Object is one rendered manifest: its source template, kind, name and text.
type Object struct {
	Source    string
	Kind      string
	Name      string
	Namespace string
	Raw       []byte
	Map       map[string]any
}

// Rendered is what an install dry run produced.
type Rendered struct {
	Objects []Object // manifests, hooks included
	Notes   string
}

// ByKind returns the objects of one kind.
func (r *Rendered) ByKind(kind string) []Object {
	var out []Object
	for _, o := range r.Objects {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// LoadValues reads values files (relative to dir when not absolute) and
// merges them left to right, later files winning, like helm -f a -f b.
func LoadValues(dir string, files ...string) (map[string]any, error) {
	vals := map[string]any{}
	for _, f := range files {
		if !filepath.IsAbs(f) {
			f = filepath.Join(dir, f)
		}
		v, err := chartutil.ReadValuesFile(f)
		if err != nil {
			return nil, fmt.Errorf("read values %s: %w", f, err)
		}
		vals = MergeValues(vals, v.AsMap())
	}
	return vals, nil
}

// MergeValues deep-merges b into a copy of a (maps merge, everything else is replaced).
func MergeValues(a, b map[string]any) map[string]any {
	out := make(map[string]any, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if bm, ok := v.(map[string]any); ok {
			if am, ok := out[k].(map[string]any); ok {
				out[k] = MergeValues(am, bm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// Lint runs helm lint (strict: warnings fail too) on the chart in dir.
func Lint(dir string, vals map[string]any) error {
	l := action.NewLint()
	l.Strict = true
	l.Namespace = namespace
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		return fmt.Errorf("kube version: %w", err)
	}
	l.KubeVersion = kv
	res := l.Run([]string{dir}, vals)
	if len(res.Errors) == 0 {
		return nil
	}
	msgs := make([]string, 0, len(res.Errors))
	for _, e := range res.Errors {
		msgs = append(msgs, e.Error())
	}
	return fmt.Errorf("helm lint: %s", strings.Join(msgs, "; "))
}

// LoadChart loads the chart directory (honouring .helmignore).
func LoadChart(dir string) (*chart.Chart, error) {
	c, err := loader.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("load chart %s: %w", dir, err)
	}
	return c, nil
}

// Render renders the chart like `helm install --dry-run` without a cluster
// (schema validation, dependencies and NOTES.txt included) and parses every
// manifest and hook as YAML.
func Render(c *chart.Chart, vals map[string]any) (*Rendered, error) {
	cfg := &action.Configuration{Log: func(string, ...any) {}}
	in := action.NewInstall(cfg)
	in.DryRun = true
	in.ClientOnly = true
	in.Replace = true
	in.ReleaseName = releaseName
	in.Namespace = namespace
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		return nil, fmt.Errorf("kube version: %w", err)
	}
	in.KubeVersion = kv
	in.APIVersions = chartutil.VersionSet{"monitoring.coreos.com/v1", "keda.sh/v1alpha1"}
	rel, err := in.Run(c, vals)
	if err != nil {
		return nil, fmt.Errorf("render: %w", err)
	}
	out := &Rendered{Notes: rel.Info.Notes}
	var errs []error
	docs := releaseutil.SplitManifests(rel.Manifest)
	keys := make([]string, 0, len(docs))
	for k := range docs {
		keys = append(keys, k)
	}
	sort.Sort(releaseutil.BySplitManifestsOrder(keys))
	var texts []string
	for _, k := range keys {
		texts = append(texts, docs[k])
	}
	for _, h := range rel.Hooks {
		texts = append(texts, "# Source: "+h.Path+"\n"+h.Manifest)
	}
	for _, text := range texts {
		o, err := parseObject(text)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if o != nil {
			out.Objects = append(out.Objects, *o)
		}
	}
	return out, errors.Join(errs...)
}

// parseObject parses one rendered document; nil for an empty document.
func parseObject(text string) (*Object, error) {
	source := "?"
	if first, _, ok := strings.Cut(text, "\n"); ok && strings.HasPrefix(first, "# Source: ") {
		source = strings.TrimPrefix(first, "# Source: ")
	}
	var m map[string]any
	if err := yaml.Unmarshal([]byte(text), &m); err != nil {
		return nil, fmt.Errorf("%s: rendered manifest is not valid YAML: %w", source, err)
	}
	if len(m) == 0 {
		return nil, nil
	}
	o := &Object{Source: source, Raw: []byte(text), Map: m}
	o.Kind, _ = m["kind"].(string)
	meta, _ := m["metadata"].(map[string]any)
	o.Name, _ = meta["name"].(string)
	o.Namespace, _ = meta["namespace"].(string)
	if o.Kind == "" || o.Name == "" {
		return nil, fmt.Errorf("%s: manifest without kind or metadata.name", source)
	}
	if _, ok := m["apiVersion"].(string); !ok {
		return nil, fmt.Errorf("%s: manifest without apiVersion", source)
	}
	return o, nil
}

// WriteManifests prints the rendered objects like helm template does.
func WriteManifests(w io.Writer, r *Rendered) error {
	for _, o := range r.Objects {
		if _, err := fmt.Fprintf(w, "---\n%s\n", strings.TrimSpace(string(o.Raw))); err != nil {
			return err
		}
	}
	return nil
}

// CopyTree copies the directory src to dst (for broken copies of the chart
// in tests): CopyContext with nothing ignored.
func CopyTree(src, dst string) error {
	return CopyContext(src, dst, &Ignore{})
}

// copyEntry copies one entry of a walk to target: a directory is created, a
// regular file copied (with its parent directories), anything else skipped.
func copyEntry(p, target string, d os.DirEntry) error {
	if d.IsDir() {
		return os.MkdirAll(target, 0o755)
	}
	if !d.Type().IsRegular() {
		return nil
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	return os.WriteFile(target, data, 0o644)
}
