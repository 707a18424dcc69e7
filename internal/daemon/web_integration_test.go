package daemon_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/chronow/persister/internal/daemon"
	"github.com/chronow/persister/internal/e2e"
	"github.com/chronow/persister/internal/testenv"
)

// TestWebConfigProtectsEndpoints serves the endpoints with an
// exporter-toolkit web config (TLS, basic auth with a bcrypt hash): without
// credentials or with a wrong password /metrics answers 401, with them 200;
// the probe listener serves /healthz and /readyz in the clear and nothing
// else; a real Prometheus scrapes /metrics over TLS with the credentials.
// Then the web config asks for client certificates: a client without one
// is refused at the handshake (the file is read again per connection).
func TestWebConfigProtectsEndpoints(t *testing.T) {
	pki := testenv.NewPKI(t)
	rs := testenv.StartRedis(t)
	ms := testenv.StartMongo(t)
	dir := t.TempDir()
	password := "scrape-" + strings.Repeat("x", 8) + fmt.Sprint(time.Now().UnixNano())
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webCfg := filepath.Join(dir, "web.yml")
	writeWeb := func(extraTLS string) {
		t.Helper()
		yml := fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\n%sbasic_auth_users:\n  prometheus: %s\n",
			pki.ServerCert, pki.ServerKey, extraTLS, hash)
		if err := os.WriteFile(webCfg, []byte(yml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeWeb("")
	cfg := e2e.Config(t, e2e.Env(t, rs.URL, ms.URI, []string{"acme"}, map[string]string{
		"PERSISTER_WEB_CONFIG_FILE": webCfg,
		"PERSISTER_PROBE_ADDR":      "127.0.0.1:0",
	}))
	var logs e2e.LogBuffer
	d, err := daemon.New(context.Background(), cfg, slog.New(slog.NewTextHandler(&logs, nil)), "test")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(60 * time.Second):
			return fmt.Errorf("daemon did not stop within 60s")
		}
	}
	t.Cleanup(func() {
		_ = stop()
		t.Logf("daemon log:\n%s", logs.String())
	})
	var addr, probe string
	e2e.Eventually(t, 30*time.Second, "HTTP and probe addresses", func() (bool, string) {
		addr, probe = d.HTTPAddr(), d.ProbeAddr()
		return addr != "" && probe != "", "not yet"
	})
	tlsClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Pool}}}
	base := "https://" + addr

	if code, _, err := e2e.HTTPGet(tlsClient, base+"/metrics", "", ""); err != nil || code != http.StatusUnauthorized {
		t.Errorf("/metrics without credentials: %d %v, want 401", code, err)
	}
	if code, _, err := e2e.HTTPGet(tlsClient, base+"/metrics", "prometheus", "wrong"); err != nil || code != http.StatusUnauthorized {
		t.Errorf("/metrics with a wrong password: %d %v, want 401", code, err)
	}
	if code, _, err := e2e.HTTPGet(tlsClient, base+"/readyz", "", ""); err != nil || code != http.StatusUnauthorized {
		t.Errorf("/readyz on the protected port without credentials: %d %v, want 401", code, err)
	}
	code, body, err := e2e.HTTPGet(tlsClient, base+"/metrics", "prometheus", password)
	if err != nil || code != http.StatusOK || !strings.Contains(body, "persister_build_info") {
		t.Fatalf("/metrics with credentials: %d %v", code, err)
	}
	if strings.Contains(body, password) || strings.Contains(body, string(hash)) {
		t.Error("/metrics shows the web password or its hash")
	}
	if code, _, err := e2e.HTTPGet(http.DefaultClient, "http://"+addr+"/metrics", "", ""); err == nil && code == http.StatusOK {
		t.Error("plain HTTP answered on the TLS port")
	}
	// The probe listener: open, plain, /healthz and /readyz only.
	var readyz string
	for path, want := range map[string]int{"/healthz": http.StatusOK, "/readyz": http.StatusOK, "/metrics": http.StatusNotFound} {
		code, body, err := e2e.HTTPGet(http.DefaultClient, "http://"+probe+path, "", "")
		if err != nil || code != want {
			t.Errorf("probe %s: %d %v, want %d", path, code, err, want)
		}
		if path == "/readyz" {
			readyz = body
		}
	}

	// A real Prometheus scrapes over TLS with basic auth.
	pwFile := filepath.Join(dir, "scrape-password")
	if err := os.WriteFile(pwFile, []byte(password), 0o600); err != nil {
		t.Fatal(err)
	}
	job := fmt.Sprintf("    scheme: https\n    tls_config:\n      ca_file: %q\n    basic_auth:\n      username: prometheus\n      password_file: %q\n    static_configs:\n      - targets: [%q]\n",
		pki.CACert, pwFile, addr)
	prom := startPrometheusJob(t, job)
	e2e.Eventually(t, 60*time.Second, "Prometheus scraped the persister over TLS with basic auth", func() (bool, string) {
		var res struct {
			Result []struct {
				Value []any `json:"value"`
			} `json:"result"`
		}
		if err := promAPI(prom, "/api/v1/query", url.Values{"query": {`persister_build_info * on() group_left up{job="persister"}`}}, &res); err != nil {
			return false, err.Error()
		}
		return len(res.Result) == 1 && fmt.Sprint(res.Result[0].Value[1]) == "1", fmt.Sprint(res.Result)
	})

	// Client certificates required: the file is read again per connection.
	writeWeb("  client_ca_file: " + pki.CACert + "\n  client_auth_type: RequireAndVerifyClientCert\n")
	noCert := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Pool}, DisableKeepAlives: true}}
	e2e.Eventually(t, 30*time.Second, "a client without a certificate refused", func() (bool, string) {
		code, _, err := e2e.HTTPGet(noCert, base+"/metrics", "prometheus", password)
		return err != nil, fmt.Sprint(code)
	})
	withCert := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: pki.ClientTLS(), DisableKeepAlives: true}}
	if code, _, err := e2e.HTTPGet(withCert, base+"/metrics", "prometheus", password); err != nil || code != http.StatusOK {
		t.Errorf("/metrics with a client certificate and credentials: %d %v", code, err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for what, text := range map[string]string{"log": logs.String(), "readyz": readyz, "metrics": body} {
		if err := e2e.Redacted(text, password, string(hash), e2e.KeyMaterial(t, pki.ServerKey)); err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}
}
