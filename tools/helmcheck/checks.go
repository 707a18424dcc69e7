package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// Problems collects failed assertions, each naming where and what.
type Problems struct{ list []string }

// Addf records one problem.
func (p *Problems) Addf(format string, a ...any) { p.list = append(p.list, fmt.Sprintf(format, a...)) }

// Err returns nil or all problems.
func (p *Problems) Err() error {
	if len(p.list) == 0 {
		return nil
	}
	return fmt.Errorf("%d problem(s):\n  - %s", len(p.list), strings.Join(p.list, "\n  - "))
}

// ChartFiles are the chart's monitoring files the templates load.
type ChartFiles struct {
	Dashboard []byte // files/dashboard.json
	Alerts    []byte // files/alerts.yaml
}

// secretEnv must only come from Secrets: never a literal value.
var secretEnv = []string{"REDIS_PASSWORD", "MONGO_URI"}

// daemonPrefixes are the environment names owned by the daemon; the chart
// may only set those the daemon reads (a typo would be silently ignored).
var daemonPrefixes = []string{"REDIS_", "MONGO_", "PERSISTER_", "CHRONOS_"}

// decode strictly decodes a rendered manifest into a Kubernetes type:
// unknown fields (a misspelt or misplaced key) are errors.
func decode(p *Problems, o Object, into any) bool {
	if err := yaml.UnmarshalStrict(o.Raw, into); err != nil {
		p.Addf("%s %s (%s): does not decode as %T: %v", o.Kind, o.Name, o.Source, into, err)
		return false
	}
	return true
}

// CheckRendered checks one scenario's rendered manifests against its values.
func CheckRendered(r *Rendered, e Expect, env map[string]string, files ChartFiles) error {
	var p Problems
	checkKinds(&p, r, e)
	pod := checkDeployments(&p, r, e, env)
	checkJobs(&p, r, e, env)
	svcLabels, svcPort := checkServices(&p, r, e, pod)
	checkPDBs(&p, r, pod.labels)
	for _, o := range r.ByKind("ServiceMonitor") {
		checkServiceMonitor(&p, o, svcLabels, svcPort, e)
	}
	checkConfigObjects(&p, r, e, files)
	for _, o := range r.ByKind("PrometheusRule") {
		checkPrometheusRule(&p, o, files.Alerts)
	}
	for _, o := range r.ByKind("ScaledObject") {
		checkScaledObject(&p, o, e)
	}
	if e.Mode != "standalone" {
		for _, s := range []string{"persister.sidecarContainer", "name: " + e.ContainerName, "terminationGracePeriodSeconds"} {
			if !strings.Contains(r.Notes, s) {
				p.Addf("NOTES.txt (sidecar mode) lacks %q", s)
			}
		}
	}
	return p.Err()
}

// checkKinds checks that every object has a namespace and that each kind is
// rendered as often as the values ask.
func checkKinds(p *Problems, r *Rendered, e Expect) {
	kinds := map[string]int{}
	for _, o := range r.Objects {
		kinds[o.Kind]++
		if o.Namespace == "" {
			p.Addf("%s %s: no metadata.namespace", o.Kind, o.Name)
		}
	}
	want := func(kind string, n int) {
		if kinds[kind] != n {
			p.Addf("rendered %d %s, want %d", kinds[kind], kind, n)
		}
	}
	standalone := e.Mode == "standalone"
	want("Deployment", b2i(standalone))
	want("PodDisruptionBudget", b2i(standalone && e.PDB))
	want("ScaledObject", b2i(standalone && e.KEDA))
	want("Service", b2i(e.Service))
	want("ServiceMonitor", b2i(e.ServiceMonitor))
	want("PrometheusRule", b2i(e.PrometheusRule))
	want("Job", b2i(e.Migrate))
	want("ConfigMap", b2i(e.Dashboard)+b2i(e.Chronos != nil && e.ChronosCreated && e.Chronos.Kind == "ConfigMap"))
	want("Secret", b2i(e.Chronos != nil && e.ChronosCreated && e.Chronos.Kind == "Secret"))
}

// deployedPod is what the Deployment says of its pods, for the objects that
// select them.
type deployedPod struct {
	labels, selector map[string]string
	ports            []corev1.ContainerPort
}

// checkDeployments checks the daemon's Deployment and its pod.
func checkDeployments(p *Problems, r *Rendered, e Expect, env map[string]string) deployedPod {
	var pod deployedPod
	for _, o := range r.ByKind("Deployment") {
		var d appsv1.Deployment
		if !decode(p, o, &d) {
			continue
		}
		where := "Deployment " + d.Name
		if d.Name != e.FullName {
			p.Addf("%s: name, want %s", where, e.FullName)
		}
		switch {
		case e.KEDA && d.Spec.Replicas != nil:
			p.Addf("%s: spec.replicas = %d with KEDA on, want unset (the HPA owns it)", where, *d.Spec.Replicas)
		case !e.KEDA && (d.Spec.Replicas == nil || int(*d.Spec.Replicas) != e.Replicas):
			p.Addf("%s: spec.replicas = %v, want %d", where, ptrVal(d.Spec.Replicas), e.Replicas)
		}
		pod.labels = d.Spec.Template.Labels
		if d.Spec.Selector == nil || !subset(d.Spec.Selector.MatchLabels, pod.labels) || len(d.Spec.Selector.MatchLabels) == 0 {
			p.Addf("%s: selector %v does not match pod labels %v", where, d.Spec.Selector, pod.labels)
		} else {
			pod.selector = d.Spec.Selector.MatchLabels
		}
		c := checkPod(p, where, d.Spec.Template.Spec, e, env, podOpts{serve: true, ownPod: true})
		if c != nil {
			pod.ports = c.Ports
		}
	}
	return pod
}

// checkJobs checks the migrate hook Job.
func checkJobs(p *Problems, r *Rendered, e Expect, env map[string]string) {
	for _, o := range r.ByKind("Job") {
		var j batchv1.Job
		if !decode(p, o, &j) {
			continue
		}
		where := "Job " + j.Name
		hooks := j.Annotations["helm.sh/hook"]
		if !strings.Contains(hooks, "pre-install") || !strings.Contains(hooks, "pre-upgrade") {
			p.Addf("%s: helm.sh/hook = %q, want pre-install and pre-upgrade", where, hooks)
		}
		if j.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever && j.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyOnFailure {
			p.Addf("%s: restartPolicy %q", where, j.Spec.Template.Spec.RestartPolicy)
		}
		je := e
		je.ContainerName = "persister"
		je.AllEnv = false // checked once, on the daemon
		if c := checkPod(p, where, j.Spec.Template.Spec, je, env, podOpts{ownPod: true}); c != nil {
			if len(c.Args) == 0 || c.Args[0] != "migrate" {
				p.Addf("%s: args %v, want migrate first", where, c.Args)
			}
		}
	}
}

// checkServices checks the metrics Service against the pods it selects and
// returns its labels and port name, for the ServiceMonitor.
func checkServices(p *Problems, r *Rendered, e Expect, pod deployedPod) (svcLabels map[string]string, svcPort string) {
	svcLabels = map[string]string{}
	standalone := e.Mode == "standalone"
	for _, o := range r.ByKind("Service") {
		var s corev1.Service
		if !decode(p, o, &s) {
			continue
		}
		where := "Service " + s.Name
		svcLabels = s.Labels
		wantSel := pod.selector
		if !standalone {
			wantSel = e.PodSelector
		}
		if len(s.Spec.Selector) == 0 || !reflect.DeepEqual(s.Spec.Selector, wantSel) {
			p.Addf("%s: selector %v, want %v", where, s.Spec.Selector, wantSel)
		}
		if len(s.Spec.Ports) != 1 {
			p.Addf("%s: %d ports, want 1", where, len(s.Spec.Ports))
			continue
		}
		sp := s.Spec.Ports[0]
		svcPort = sp.Name
		if sp.TargetPort.String() != "persister-http" {
			p.Addf("%s: targetPort %s, want persister-http", where, sp.TargetPort.String())
		}
		if standalone && !slices.ContainsFunc(pod.ports, func(cp corev1.ContainerPort) bool { return cp.Name == sp.TargetPort.String() }) {
			p.Addf("%s: targetPort %s is no port of the container", where, sp.TargetPort.String())
		}
	}
	return svcLabels, svcPort
}

// checkPDBs checks that the PodDisruptionBudget selects the pods and limits
// something.
func checkPDBs(p *Problems, r *Rendered, podLabels map[string]string) {
	for _, o := range r.ByKind("PodDisruptionBudget") {
		var b policyv1.PodDisruptionBudget
		if !decode(p, o, &b) {
			continue
		}
		if b.Spec.Selector == nil || len(b.Spec.Selector.MatchLabels) == 0 || !subset(b.Spec.Selector.MatchLabels, podLabels) {
			p.Addf("PodDisruptionBudget %s: selector does not match the pods", b.Name)
		}
		if b.Spec.MaxUnavailable == nil && b.Spec.MinAvailable == nil {
			p.Addf("PodDisruptionBudget %s: neither maxUnavailable nor minAvailable", b.Name)
		}
	}
}

// checkConfigObjects checks the dashboard ConfigMap and the chronos.json
// ConfigMap or Secret.
func checkConfigObjects(p *Problems, r *Rendered, e Expect, files ChartFiles) {
	for _, o := range r.ByKind("ConfigMap") {
		var cm corev1.ConfigMap
		if !decode(p, o, &cm) {
			continue
		}
		if strings.HasSuffix(cm.Name, "-dashboard") {
			checkDashboard(p, cm, e, files.Dashboard)
		} else {
			checkChronosObject(p, o.Kind, cm.Name, cm.Data, e)
		}
	}
	for _, o := range r.ByKind("Secret") {
		var s corev1.Secret
		if decode(p, o, &s) {
			checkChronosObject(p, o.Kind, s.Name, s.StringData, e)
		}
	}
}

// podOpts says what kind of pod checkPod looks at.
type podOpts struct {
	serve  bool // the daemon (run): ports, probes and grace are checked
	ownPod bool // the chart owns the pod spec (not a Redis pod it joins)
}

// checkPod checks the persister container of a pod spec and returns it.
func checkPod(p *Problems, where string, spec corev1.PodSpec, e Expect, env map[string]string, o podOpts) *corev1.Container {
	serve := o.serve
	i := slices.IndexFunc(spec.Containers, func(c corev1.Container) bool { return c.Name == e.ContainerName })
	if i < 0 {
		p.Addf("%s: no container %q", where, e.ContainerName)
		return nil
	}
	c := spec.Containers[i]
	where += " container " + c.Name
	if o.ownPod && (spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken) {
		p.Addf("%s: automountServiceAccountToken not false (the daemon never calls the API)", where)
	}
	if !strings.Contains(c.Image, ":") || strings.HasSuffix(c.Image, ":") {
		p.Addf("%s: image %q has no tag", where, c.Image)
	}
	if serve && (len(c.Args) != 1 || c.Args[0] != "run") {
		p.Addf("%s: args %v, want [run]", where, c.Args)
	}
	pod := spec.SecurityContext
	if !o.ownPod {
		pod = nil // a joined pod's settings are not the chart's: the container must carry them all
	}
	checkSecurity(p, where, pod, c.SecurityContext)
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		p.Addf("%s: no cpu/memory requests", where)
	}

	vars := checkEnv(p, where, c.Env, e, env, e.Mode == "sidecar" && serve)
	addr := vars["PERSISTER_HTTP_ADDR"].Value
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port != fmt.Sprint(e.HTTPPort) {
		p.Addf("%s: PERSISTER_HTTP_ADDR = %q, want :%d", where, addr, e.HTTPPort)
	}
	switch probe, set := vars["PERSISTER_PROBE_ADDR"]; {
	case e.WebConfig == nil && set:
		p.Addf("%s: PERSISTER_PROBE_ADDR set without web.secretName", where)
	case e.WebConfig != nil && probe.Value != fmt.Sprintf(":%d", e.ProbePort):
		p.Addf("%s: PERSISTER_PROBE_ADDR = %q, want :%d (web.probePort)", where, probe.Value, e.ProbePort)
	}
	grace, err := time.ParseDuration(vars["PERSISTER_SHUTDOWN_GRACE"].Value)
	if err != nil || grace != e.Grace {
		p.Addf("%s: PERSISTER_SHUTDOWN_GRACE = %q, want %s", where, vars["PERSISTER_SHUTDOWN_GRACE"].Value, e.Grace)
	}
	if serve {
		tg := spec.TerminationGracePeriodSeconds
		if tg == nil || time.Duration(*tg)*time.Second <= grace {
			p.Addf("%s: terminationGracePeriodSeconds = %v, want above the daemon's shutdown grace %s", where, ptrVal(tg), grace)
		}
		checkPorts(p, where, c, e)
	}
	checkMounts(p, where, spec, c, vars, e)
	return &c
}

func checkPorts(p *Problems, where string, c corev1.Container, e Expect) {
	probePort, probeNum := "persister-http", e.HTTPPort
	if e.WebConfig != nil {
		// The probes go to the plain listener (PERSISTER_PROBE_ADDR).
		probePort, probeNum = "persister-probe", e.ProbePort
		if len(c.Ports) != 2 || c.Ports[1].Name != probePort || int(c.Ports[1].ContainerPort) != e.ProbePort {
			p.Addf("%s: ports %+v, want persister-http on %d and persister-probe on %d", where, c.Ports, e.HTTPPort, e.ProbePort)
		}
	} else if len(c.Ports) != 1 {
		p.Addf("%s: ports %+v, want one named persister-http on %d", where, c.Ports, e.HTTPPort)
	}
	if len(c.Ports) == 0 || c.Ports[0].Name != "persister-http" || int(c.Ports[0].ContainerPort) != e.HTTPPort {
		p.Addf("%s: ports %+v, want persister-http on %d first", where, c.Ports, e.HTTPPort)
	}
	probes := []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"livenessProbe", c.LivenessProbe, "/healthz"},
		{"readinessProbe", c.ReadinessProbe, e.ReadinessPath},
	}
	for _, pr := range probes {
		switch {
		case pr.probe == nil || pr.probe.HTTPGet == nil:
			p.Addf("%s: no HTTP %s", where, pr.name)
		case pr.probe.HTTPGet.Path != pr.path:
			p.Addf("%s: %s path %q, want %q", where, pr.name, pr.probe.HTTPGet.Path, pr.path)
		case pr.probe.HTTPGet.Port.String() != probePort && pr.probe.HTTPGet.Port.IntValue() != probeNum:
			p.Addf("%s: %s port %s, want %s", where, pr.name, pr.probe.HTTPGet.Port.String(), probePort)
		case pr.probe.HTTPGet.Scheme != "" && pr.probe.HTTPGet.Scheme != corev1.URISchemeHTTP:
			p.Addf("%s: %s scheme %s, want HTTP (the probe listener is plain)", where, pr.name, pr.probe.HTTPGet.Scheme)
		case pr.probe.TimeoutSeconds < 1 || pr.probe.PeriodSeconds < pr.probe.TimeoutSeconds:
			p.Addf("%s: %s timeout %ds period %ds", where, pr.name, pr.probe.TimeoutSeconds, pr.probe.PeriodSeconds)
		}
	}
}

func checkSecurity(p *Problems, where string, pod *corev1.PodSecurityContext, sc *corev1.SecurityContext) {
	if sc == nil {
		p.Addf("%s: no securityContext", where)
		return
	}
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		p.Addf("%s: securityContext.runAsNonRoot not true", where)
	}
	if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		p.Addf("%s: securityContext.runAsUser is 0", where)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		p.Addf("%s: securityContext.readOnlyRootFilesystem not true", where)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		p.Addf("%s: securityContext.allowPrivilegeEscalation not false", where)
	}
	if sc.Privileged != nil && *sc.Privileged {
		p.Addf("%s: securityContext.privileged", where)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		p.Addf("%s: capabilities %+v, want drop [ALL] and no add", where, sc.Capabilities)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil && pod != nil {
		seccomp = pod.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		p.Addf("%s: seccompProfile %+v, want RuntimeDefault", where, seccomp)
	}
	if pod != nil && (pod.RunAsNonRoot == nil || !*pod.RunAsNonRoot) {
		p.Addf("%s: pod securityContext.runAsNonRoot not true", where)
	}
}

// checkEnv checks the container's environment and returns it by name.
// localRedis: the container is a sidecar and must talk to Redis on localhost.
func checkEnv(p *Problems, where string, list []corev1.EnvVar, e Expect, env map[string]string, localRedis bool) map[string]corev1.EnvVar {
	vars := map[string]corev1.EnvVar{}
	for _, v := range list {
		if _, dup := vars[v.Name]; dup {
			p.Addf("%s: env %s set twice", where, v.Name)
		}
		vars[v.Name] = v
		if v.Value != "" && strings.Contains(v.Value, "://") {
			if u, err := url.Parse(v.Value); err == nil && u.User != nil {
				p.Addf("%s: env %s holds credentials inline", where, v.Name)
			}
		}
		owned := slices.ContainsFunc(daemonPrefixes, func(pre string) bool { return strings.HasPrefix(v.Name, pre) })
		if _, known := env[v.Name]; owned && !known {
			p.Addf("%s: env %s is not read by the daemon (internal/config)", where, v.Name)
		}
	}
	for _, name := range []string{"PERSISTER_CONSUMER", "PERSISTER_HTTP_ADDR", "PERSISTER_SHUTDOWN_GRACE", "REDIS_URL"} {
		if _, ok := vars[name]; !ok {
			p.Addf("%s: env %s missing", where, name)
		}
	}
	if c := vars["PERSISTER_CONSUMER"]; c.ValueFrom == nil || c.ValueFrom.FieldRef == nil || c.ValueFrom.FieldRef.FieldPath != "metadata.name" {
		p.Addf("%s: PERSISTER_CONSUMER must come from the pod name (fieldRef metadata.name)", where)
	}
	if localRedis {
		u, err := url.Parse(vars["REDIS_URL"].Value)
		if err != nil || (u.Hostname() != "127.0.0.1" && u.Hostname() != "localhost") {
			p.Addf("%s: sidecar REDIS_URL %q, want Redis on localhost", where, vars["REDIS_URL"].Value)
		}
	}
	for _, name := range secretEnv {
		v, ok := vars[name]
		if ok && (v.Value != "" || v.ValueFrom == nil || v.ValueFrom.SecretKeyRef == nil) {
			p.Addf("%s: env %s must come from a secretKeyRef, never a literal value", where, name)
		}
	}
	refs := map[string]*SecretRef{"REDIS_PASSWORD": e.RedisPassword, "MONGO_URI": e.MongoURI}
	for _, name := range sortedKeys(refs) {
		want := refs[name]
		v, ok := vars[name]
		switch {
		case want == nil && ok:
			p.Addf("%s: env %s set, but the values name no Secret for it", where, name)
		case want != nil && !ok:
			p.Addf("%s: env %s missing (Secret %s key %s)", where, name, want.Name, want.Key)
		case want != nil && v.ValueFrom != nil && v.ValueFrom.SecretKeyRef != nil:
			ref := v.ValueFrom.SecretKeyRef
			if ref.Name != want.Name || ref.Key != want.Key {
				p.Addf("%s: env %s from Secret %s key %s, want Secret %s key %s", where, name, ref.Name, ref.Key, want.Name, want.Key)
			}
		}
	}
	if e.AllEnv {
		for _, name := range sortedKeys(env) {
			if _, ok := vars[name]; !ok {
				p.Addf("%s: env %s (read by the daemon) is never set by the chart: %s", where, name, howToAdd(name))
			}
		}
	}
	for _, v := range list {
		// A setting whose default is a duration must be given a duration.
		def, ok := env[v.Name]
		if !ok || v.Value == "" || !strings.ContainsAny(def, "smh") {
			continue
		}
		if _, err := time.ParseDuration(def); err != nil {
			continue
		}
		if _, err := time.ParseDuration(v.Value); err != nil {
			p.Addf("%s: env %s = %q is not a duration", where, v.Name, v.Value)
		}
	}
	return vars
}

// checkMounts checks that every mount has a volume and that the files the
// daemon is pointed at (CHRONOS_CONFIG, REDIS_CA_CERT) are mounted from the
// objects the values name.
func checkMounts(p *Problems, where string, spec corev1.PodSpec, c corev1.Container, vars map[string]corev1.EnvVar, e Expect) {
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	for _, m := range c.VolumeMounts {
		if _, ok := vols[m.Name]; !ok {
			p.Addf("%s: volumeMount %s has no volume", where, m.Name)
		}
	}
	files := []struct {
		env  string
		want *FileRef
	}{{"CHRONOS_CONFIG", e.Chronos}, {"REDIS_CA_CERT", e.RedisCA}, {"REDIS_TLS_CERT", e.RedisClientCert}, {"REDIS_TLS_KEY", e.RedisClientKey}, {"PERSISTER_WEB_CONFIG_FILE", e.WebConfig}}
	for _, f := range files {
		v, set := vars[f.env]
		if f.want == nil {
			if set {
				p.Addf("%s: env %s set, but the values mount no file for it", where, f.env)
			}
			continue
		}
		if !set || v.Value != f.want.Path() {
			p.Addf("%s: env %s = %q, want %q", where, f.env, v.Value, f.want.Path())
			continue
		}
		mi := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
			return strings.TrimSuffix(m.MountPath, "/") == strings.TrimSuffix(f.want.MountPath, "/")
		})
		if mi < 0 {
			p.Addf("%s: %s: nothing mounted at %s", where, f.env, f.want.MountPath)
			continue
		}
		m := c.VolumeMounts[mi]
		if !m.ReadOnly {
			p.Addf("%s: mount %s is not read-only", where, m.Name)
		}
		vol := vols[m.Name]
		var name string
		var items []corev1.KeyToPath
		switch {
		case vol.Secret != nil && f.want.Kind == "Secret":
			name, items = vol.Secret.SecretName, vol.Secret.Items
		case vol.ConfigMap != nil && f.want.Kind == "ConfigMap":
			name, items = vol.ConfigMap.Name, vol.ConfigMap.Items
		default:
			p.Addf("%s: volume %s is not a %s", where, m.Name, f.want.Kind)
			continue
		}
		if name != f.want.Name {
			p.Addf("%s: volume %s from %s %q, want %q", where, m.Name, f.want.Kind, name, f.want.Name)
		}
		if len(items) > 0 && !slices.ContainsFunc(items, func(k corev1.KeyToPath) bool { return k.Key == f.want.Key && k.Path == f.want.Key }) {
			p.Addf("%s: volume %s does not project key %s to %s", where, m.Name, f.want.Key, f.want.Key)
		}
	}
}

func checkServiceMonitor(p *Problems, o Object, svcLabels map[string]string, svcPort string, e Expect) {
	var sm struct {
		Spec struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			Endpoints []struct {
				Port      string         `json:"port"`
				Path      string         `json:"path"`
				Scheme    string         `json:"scheme"`
				TLSConfig map[string]any `json:"tlsConfig"`
				BasicAuth map[string]any `json:"basicAuth"`
			} `json:"endpoints"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(o.Raw, &sm); err != nil {
		p.Addf("ServiceMonitor %s: %v", o.Name, err)
		return
	}
	if len(sm.Spec.Selector.MatchLabels) == 0 || !subset(sm.Spec.Selector.MatchLabels, svcLabels) {
		p.Addf("ServiceMonitor %s: selector %v does not match the Service labels %v", o.Name, sm.Spec.Selector.MatchLabels, svcLabels)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != svcPort || sm.Spec.Endpoints[0].Path != "/metrics" {
		p.Addf("ServiceMonitor %s: endpoints %+v, want port %s path /metrics", o.Name, sm.Spec.Endpoints, svcPort)
		return
	}
	ep := sm.Spec.Endpoints[0]
	if ep.Scheme != e.SMScheme {
		p.Addf("ServiceMonitor %s: scheme %q, want %q (serviceMonitor.scheme)", o.Name, ep.Scheme, e.SMScheme)
	}
	if !sameYAML(ep.TLSConfig, e.SMTLS) {
		p.Addf("ServiceMonitor %s: tlsConfig %v, want serviceMonitor.tlsConfig %v", o.Name, ep.TLSConfig, e.SMTLS)
	}
	if !sameYAML(ep.BasicAuth, e.SMBasicAuth) {
		p.Addf("ServiceMonitor %s: basicAuth %v, want serviceMonitor.basicAuth %v", o.Name, ep.BasicAuth, e.SMBasicAuth)
	}
	if e.WebConfig != nil && e.SMScheme == "http" && len(ep.BasicAuth) == 0 {
		p.Addf("ServiceMonitor %s: web.secretName protects /metrics, but the scrape has neither https nor basicAuth", o.Name)
	}
}

// sameYAML compares two values as YAML documents (an empty map equals nil).
func sameYAML(a, b any) bool {
	norm := func(v any) string {
		if m, ok := v.(map[string]any); ok && len(m) == 0 {
			v = nil
		}
		out, _ := yaml.Marshal(v)
		return string(out)
	}
	return norm(a) == norm(b)
}

func checkDashboard(p *Problems, cm corev1.ConfigMap, e Expect, file []byte) {
	where := "dashboard ConfigMap " + cm.Name
	for k, v := range e.DashboardLabel {
		if cm.Labels[k] != v {
			p.Addf("%s: label %s = %q, want %q (Grafana sidecar discovery)", where, k, cm.Labels[k], v)
		}
	}
	if len(cm.Data) != 1 {
		p.Addf("%s: %d data keys, want 1", where, len(cm.Data))
	}
	for k, v := range cm.Data {
		var d map[string]any
		if !strings.HasSuffix(k, ".json") {
			p.Addf("%s: key %s does not end in .json", where, k)
		}
		if err := json.Unmarshal([]byte(v), &d); err != nil {
			p.Addf("%s: %s is not valid JSON: %v", where, k, err)
			continue
		}
		if _, ok := d["panels"]; !ok {
			p.Addf("%s: %s has no panels", where, k)
		}
		if v != string(file) {
			p.Addf("%s: %s differs from files/dashboard.json", where, k)
		}
	}
}

func checkChronosObject(p *Problems, kind, name string, data map[string]string, e Expect) {
	where := kind + " " + name
	if e.Chronos == nil || !e.ChronosCreated || name != e.Chronos.Name {
		p.Addf("%s: unexpected", where)
		return
	}
	var c struct {
		DBConnections map[string]any `json:"dbConnections"`
	}
	if err := json.Unmarshal([]byte(data[e.Chronos.Key]), &c); err != nil || len(c.DBConnections) == 0 {
		p.Addf("%s: key %s is not a chronos config (JSON with dbConnections): %v", where, e.Chronos.Key, err)
	}
}

func checkPrometheusRule(p *Problems, o Object, file []byte) {
	where := "PrometheusRule " + o.Name
	type rule struct {
		Alert  string `json:"alert"`
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	type group struct {
		Name  string `json:"name"`
		Rules []rule `json:"rules"`
	}
	var pr struct {
		Spec struct {
			Groups []group `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(o.Raw, &pr); err != nil {
		p.Addf("%s: %v", where, err)
		return
	}
	if len(pr.Spec.Groups) == 0 {
		p.Addf("%s: spec.groups is empty", where)
	}
	for _, g := range pr.Spec.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			p.Addf("%s: group %q without name or rules", where, g.Name)
		}
		for _, r := range g.Rules {
			if (r.Alert == "") == (r.Record == "") || strings.TrimSpace(r.Expr) == "" {
				p.Addf("%s: group %s: rule %+v needs expr and one of alert/record", where, g.Name, r)
			}
		}
	}
	var got, want struct {
		Groups any `json:"groups"`
	}
	var whole struct {
		Spec json.RawMessage `json:"spec"`
	}
	if err := yaml.Unmarshal(o.Raw, &whole); err == nil {
		_ = json.Unmarshal(whole.Spec, &got)
	}
	if err := yaml.Unmarshal(file, &want); err != nil {
		p.Addf("%s: files/alerts.yaml: %v", where, err)
	} else if !reflect.DeepEqual(got.Groups, want.Groups) {
		p.Addf("%s: spec.groups differ from the groups of files/alerts.yaml", where)
	}
}

func checkScaledObject(p *Problems, o Object, e Expect) {
	where := "ScaledObject " + o.Name
	var so struct {
		Spec struct {
			ScaleTargetRef struct {
				Kind string `json:"kind"`
				Name string `json:"name"`
			} `json:"scaleTargetRef"`
			MinReplicaCount *int `json:"minReplicaCount"`
			MaxReplicaCount *int `json:"maxReplicaCount"`
			Triggers        []struct {
				Type     string            `json:"type"`
				Metadata map[string]string `json:"metadata"`
			} `json:"triggers"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(o.Raw, &so); err != nil {
		p.Addf("%s: %v", where, err)
		return
	}
	s := so.Spec
	if s.ScaleTargetRef.Kind != "Deployment" || s.ScaleTargetRef.Name != e.FullName {
		p.Addf("%s: scaleTargetRef %+v, want Deployment %s", where, s.ScaleTargetRef, e.FullName)
	}
	if s.MinReplicaCount == nil || s.MaxReplicaCount == nil || *s.MinReplicaCount > *s.MaxReplicaCount {
		p.Addf("%s: replica bounds %v..%v", where, ptrVal(s.MinReplicaCount), ptrVal(s.MaxReplicaCount))
	}
	if len(s.Triggers) != 1 || s.Triggers[0].Type != "prometheus" {
		p.Addf("%s: triggers %+v, want one prometheus trigger", where, s.Triggers)
		return
	}
	md := s.Triggers[0].Metadata
	if !strings.Contains(md["query"], "persister_stream_lag_entries") {
		p.Addf("%s: query %q does not use persister_stream_lag_entries", where, md["query"])
	}
	for _, k := range []string{"serverAddress", "threshold"} {
		if md[k] == "" {
			p.Addf("%s: trigger metadata %s empty", where, k)
		}
	}
}

// howToAdd says where a new daemon setting goes in the chart.
func howToAdd(env string) string {
	rest, ok := strings.CutPrefix(env, "PERSISTER_")
	if !ok {
		return "add a value for it (redis.*, mongo.* or chronos.*) and set it in templates/_helpers.tpl persister.env"
	}
	words := strings.Split(strings.ToLower(rest), "_")
	for i := 1; i < len(words); i++ {
		if words[i] != "" {
			words[i] = strings.ToUpper(words[i][:1]) + words[i][1:]
		}
	}
	key := strings.Join(words, "")
	return fmt.Sprintf("add config.%s (commented) to values.yaml and values.schema.json, and set it in ci/all-on-values.yaml", key)
}

func subset(sub, super map[string]string) bool {
	for k, v := range sub {
		if super[k] != v {
			return false
		}
	}
	return true
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func ptrVal[T any](p *T) any {
	if p == nil {
		return "unset"
	}
	return *p
}
