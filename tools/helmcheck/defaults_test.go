package main

import (
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chartutil"
)

// TestTemplateWithHelmDefaults renders the chart the way a plain
// `helm template chronow deploy/helm/persister` does: no --kube-version and
// no API versions, so Helm's default capabilities (Kubernetes v1.20 in
// Helm 3). The chart must render there too, and only use API versions
// that stable Kubernetes serves.
func TestTemplateWithHelmDefaults(t *testing.T) {
	c, err := LoadChart(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	in := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	in.DryRun, in.ClientOnly, in.Replace = true, true, true
	in.ReleaseName, in.Namespace = releaseName, namespace
	rel, err := in.Run(c, map[string]any{})
	if err != nil {
		t.Fatalf("helm template with Helm's default Kubernetes version (%s): %v", chartutil.DefaultCapabilities.KubeVersion.Version, err)
	}
	for _, line := range strings.Split(rel.Manifest, "\n") {
		if v, ok := strings.CutPrefix(line, "apiVersion: "); ok && (strings.Contains(v, "beta") || strings.Contains(v, "alpha")) {
			t.Errorf("rendered manifest uses a pre-release API version: %s", v)
		}
	}
}
