package main

import (
	"fmt"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
)

// SecretRef is a secretKeyRef the values ask for.
type SecretRef struct{ Name, Key string }

// FileRef is a file mounted from a Secret or ConfigMap.
type FileRef struct{ Kind, Name, Key, MountPath string }

// Path is where the daemon is told the file is.
func (f FileRef) Path() string { return strings.TrimSuffix(f.MountPath, "/") + "/" + f.Key }

// Expect is what one scenario's values promise, read from the values
// independently of the templates.
type Expect struct {
	Mode           string
	FullName       string
	ContainerName  string
	HTTPPort       int
	Grace          time.Duration
	ReadinessPath  string
	Replicas       int
	RedisPassword  *SecretRef // nil: REDIS_PASSWORD must not be set
	MongoURI       *SecretRef // nil: MONGO_URI must not be set
	Chronos        *FileRef   // nil: CHRONOS_CONFIG must not be set
	ChronosCreated bool
	RedisCA        *FileRef // nil: REDIS_CA_CERT must not be set
	// RedisClientCert and RedisClientKey: nil means REDIS_TLS_CERT and
	// REDIS_TLS_KEY must not be set.
	RedisClientCert *FileRef
	RedisClientKey  *FileRef
	// WebConfig: nil means PERSISTER_WEB_CONFIG_FILE must not be set; with
	// it, ProbePort is the plain-HTTP port the probes use.
	WebConfig *FileRef
	ProbePort int
	// The ServiceMonitor endpoint's scheme, tlsConfig and basicAuth.
	SMScheme       string
	SMTLS          any
	SMBasicAuth    any
	PodSelector    map[string]string
	Service        bool
	PDB            bool
	ServiceMonitor bool
	Dashboard      bool
	DashboardLabel map[string]string
	PrometheusRule bool
	KEDA           bool
	Migrate        bool
	AllEnv         bool // every environment name the daemon reads must be set
}

// ExpectFrom reads the expectations from the chart's defaults merged with vals.
func ExpectFrom(c *chart.Chart, vals map[string]any, allEnv bool) (Expect, error) {
	v, err := chartutil.CoalesceValues(c, vals)
	if err != nil {
		return Expect{}, fmt.Errorf("coalesce values: %w", err)
	}
	g := getter{v: v}
	e := Expect{
		Mode:           g.str("mode"),
		FullName:       releaseName + "-persister",
		ContainerName:  "persister",
		HTTPPort:       g.int("httpPort"),
		Grace:          time.Duration(g.int("config.shutdownGraceSeconds")) * time.Second,
		ReadinessPath:  "/readyz",
		Replicas:       g.int("replicaCount"),
		Service:        g.bool("service.enabled"),
		PDB:            g.bool("podDisruptionBudget.enabled"),
		ServiceMonitor: g.bool("serviceMonitor.enabled"),
		Dashboard:      g.bool("dashboard.enabled"),
		DashboardLabel: g.strMap("dashboard.labels"),
		PrometheusRule: g.bool("prometheusRule.enabled"),
		KEDA:           g.bool("keda.enabled"),
		Migrate:        g.bool("migrate.enabled"),
		PodSelector:    g.strMap("sidecar.podSelector"),
		AllEnv:         allEnv,
	}
	if s := g.str("fullnameOverride"); s != "" {
		e.FullName = s
	}
	if e.Mode == "sidecar" {
		e.ContainerName = g.str("sidecar.containerName")
		if !g.bool("sidecar.gateRedisReadiness") {
			e.ReadinessPath = "/healthz"
		}
	}
	if n := g.str("redis.password.secretName"); n != "" {
		e.RedisPassword = &SecretRef{Name: n, Key: g.str("redis.password.secretKey")}
	}
	if n := g.str("mongo.uri.secretName"); n != "" {
		e.MongoURI = &SecretRef{Name: n, Key: g.str("mongo.uri.secretKey")}
	}
	if g.bool("chronos.enabled") {
		name := g.str("chronos.name")
		e.ChronosCreated = g.bool("chronos.create")
		if name == "" && e.ChronosCreated {
			name = e.FullName + "-chronos"
		}
		e.Chronos = &FileRef{Kind: g.str("chronos.kind"), Name: name, Key: g.str("chronos.key"), MountPath: g.str("chronos.mountPath")}
	}
	if n := g.str("redis.tls.clientCert.secretName"); n != "" {
		const dir = "/etc/persister/redis-client"
		e.RedisClientCert = &FileRef{Kind: "Secret", Name: n, Key: g.str("redis.tls.clientCert.certKey"), MountPath: dir}
		e.RedisClientKey = &FileRef{Kind: "Secret", Name: n, Key: g.str("redis.tls.clientCert.keyKey"), MountPath: dir}
	}
	if n := g.str("web.secretName"); n != "" {
		e.WebConfig = &FileRef{Kind: "Secret", Name: n, Key: g.str("web.configKey"), MountPath: "/etc/persister/web"}
		e.ProbePort = g.int("web.probePort")
	}
	e.SMScheme = g.str("serviceMonitor.scheme")
	e.SMTLS = g.get("serviceMonitor.tlsConfig")
	e.SMBasicAuth = g.get("serviceMonitor.basicAuth")
	if n := g.str("redis.tls.caSecretName"); n != "" {
		e.RedisCA = &FileRef{Kind: "Secret", Name: n, Key: g.str("redis.tls.caSecretKey"), MountPath: "/etc/persister/redis-ca"}
	}
	return e, g.err
}

// getter reads dotted paths from values and remembers the first type error.
type getter struct {
	v   map[string]any
	err error
}

func (g *getter) get(path string) any {
	var cur any = g.v
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

func (g *getter) fail(path string, v any, want string) {
	if g.err == nil {
		g.err = fmt.Errorf("value %s = %v (%T), want %s", path, v, v, want)
	}
}

func (g *getter) str(path string) string {
	switch v := g.get(path).(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		g.fail(path, v, "a string")
		return ""
	}
}

func (g *getter) bool(path string) bool {
	switch v := g.get(path).(type) {
	case nil:
		return false
	case bool:
		return v
	default:
		g.fail(path, v, "a boolean")
		return false
	}
}

func (g *getter) int(path string) int {
	switch v := g.get(path).(type) {
	case float64:
		return int(v)
	case int64:
		return int(v)
	case int:
		return v
	default:
		g.fail(path, v, "a number")
		return 0
	}
}

func (g *getter) strMap(path string) map[string]string {
	out := map[string]string{}
	switch v := g.get(path).(type) {
	case nil:
	case map[string]any:
		for k, x := range v {
			s, ok := x.(string)
			if !ok {
				g.fail(path+"."+k, x, "a string")
			}
			out[k] = s
		}
	default:
		g.fail(path, v, "a map")
	}
	return out
}
