package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/prometheus/exporter-toolkit/web"
	"github.com/sethvargo/go-envconfig"
)

// Security settings (README "Security"): TLS client certificates for Redis,
// the protected HTTP endpoints, and secrets read from files.

// RedisTLS is the client certificate for mutual TLS with Redis. Chronow has
// only REDIS_TLS and REDIS_CA_CERT; these two follow their naming.
type RedisTLS struct {
	// TLSCert and TLSKey are PEM files of the client certificate and its
	// private key, presented when Redis asks for one (tls-auth-clients).
	TLSCert string `env:"REDIS_TLS_CERT"`
	TLSKey  string `env:"REDIS_TLS_KEY"`
}

// Web protects the HTTP endpoints the way Prometheus exporters do.
type Web struct {
	// ConfigFile is a web configuration file in the format of
	// github.com/prometheus/exporter-toolkit (tls_server_config,
	// basic_auth_users with bcrypt hashes, http_server_config). It is read
	// again for every connection and request, so certificates and users
	// can be rotated without a restart.
	ConfigFile string `env:"PERSISTER_WEB_CONFIG_FILE"`
	// ProbeAddr, when set, is a second, plain-HTTP listener serving only
	// /healthz and /readyz, for kubelet probes that cannot present the
	// credentials or client certificate the web config asks for.
	ProbeAddr string `env:"PERSISTER_PROBE_ADDR"`
}

// SecretSettings are the settings that may hold a secret. Each also accepts
// NAME_FILE, a file holding the value (the convention of official container
// images, for Kubernetes Secrets mounted as files).
var SecretSettings = [...]string{"REDIS_URL", "REDIS_USERNAME", "REDIS_PASSWORD", "MONGO_URI"}

// fileLookuper answers the secret settings read from their *_FILE.
type fileLookuper struct {
	base envconfig.Lookuper
	vals map[string]string
}

func (f fileLookuper) Lookup(key string) (string, bool) {
	if v, ok := f.vals[key]; ok {
		return v, true
	}
	return f.base.Lookup(key)
}

// withSecretFiles reads NAME_FILE for every secret setting NAME. Setting
// both is an error naming both; the file's trailing newline is dropped.
func withSecretFiles(l envconfig.Lookuper) (envconfig.Lookuper, error) {
	vals := map[string]string{}
	var errs []error
	for _, name := range SecretSettings {
		path, ok := l.Lookup(name + "_FILE")
		if !ok || path == "" {
			continue
		}
		if v, set := l.Lookup(name); set && v != "" {
			errs = append(errs, fmt.Errorf("%s and %s_FILE are both set: set only one", name, name))
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s_FILE: cannot read %q: %w", name, path, unwrapPath(err)))
			continue
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			errs = append(errs, fmt.Errorf("%s_FILE: %q is empty", name, path))
			continue
		}
		vals[name] = v
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
	}
	return fileLookuper{base: l, vals: vals}, nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// validateSecurity checks the TLS files and the web config.
func (c *Config) validateSecurity() []error {
	var errs []error
	r := c.Redis
	switch {
	case r.TLSCert != "" && r.TLSKey == "":
		errs = append(errs, errors.New("REDIS_TLS_KEY: must be set with REDIS_TLS_CERT (the client certificate's private key)"))
	case r.TLSCert == "" && r.TLSKey != "":
		errs = append(errs, errors.New("REDIS_TLS_CERT: must be set with REDIS_TLS_KEY (the client certificate)"))
	case r.TLSCert != "":
		if _, err := tls.LoadX509KeyPair(r.TLSCert, r.TLSKey); err != nil {
			errs = append(errs, fmt.Errorf("REDIS_TLS_CERT, REDIS_TLS_KEY: cannot load the client certificate %q and key %q: %w", r.TLSCert, r.TLSKey, unwrapPath(err)))
		}
	}
	if f := c.Web.ConfigFile; f != "" {
		if err := web.Validate(f); err != nil {
			errs = append(errs, fmt.Errorf("PERSISTER_WEB_CONFIG_FILE: %q: %w", f, unwrapPath(err)))
		}
	}
	if c.Web.ProbeAddr != "" && c.Web.ProbeAddr == c.Persister.HTTPAddr && !strings.HasSuffix(c.Web.ProbeAddr, ":0") {
		errs = append(errs, fmt.Errorf("PERSISTER_PROBE_ADDR: must differ from PERSISTER_HTTP_ADDR, both are %q", c.Web.ProbeAddr))
	}
	return errs
}

// RedisTLSEnabled reports whether the Redis connections use TLS.
func (r Redis) RedisTLSEnabled() bool {
	return r.TLS || r.CACert != "" || r.TLSCert != "" || strings.HasPrefix(r.URL, "rediss://")
}

// securitySummary adds the security settings to Summary: paths and
// switches only, never a secret.
func (c *Config) securitySummary(m map[string]any) {
	m["redis_tls"] = c.Redis.RedisTLSEnabled()
	m["redis_ca_cert"] = c.Redis.CACert
	m["redis_tls_cert"] = c.Redis.TLSCert
	m["web_config_file"] = c.Web.ConfigFile
	m["probe_addr"] = c.Web.ProbeAddr
}

// secretParams are URI options that hold a secret (MongoDB's password of an
// encrypted client key file).
var secretParams = []string{"tlsCertificateKeyFilePassword", "sslClientCertificateKeyPassword"}

// RedactURI replaces the password of a URI (redis or mongodb, one or several
// hosts) and the secret options of its query with "xxxxx".
func RedactURI(uri string) string {
	out := redactUserinfo(uri)
	q := strings.IndexByte(out, '?')
	if q < 0 {
		return out
	}
	parts := strings.Split(out[q+1:], "&")
	for i, p := range parts {
		name, _, _ := strings.Cut(p, "=")
		for _, s := range secretParams {
			if strings.EqualFold(name, s) {
				parts[i] = name + "=xxxxx"
			}
		}
	}
	return out[:q+1] + strings.Join(parts, "&")
}
