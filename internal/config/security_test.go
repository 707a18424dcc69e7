package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Every secret setting also comes from NAME_FILE; the trailing newline of
// a mounted Secret is dropped; setting both is an error naming both.
func TestSecretFiles(t *testing.T) {
	c, err := load(t, map[string]string{
		"REDIS_URL_FILE":      writeFile(t, "url", "rediss://cache.example:6380/2\n"),
		"REDIS_USERNAME_FILE": writeFile(t, "user", "persister"),
		"REDIS_PASSWORD_FILE": writeFile(t, "pw", "s3cret-from-file\r\n"),
		"MONGO_URI_FILE":      writeFile(t, "mongo", "mongodb://u:m0ngo-pw@db.example:27017/?tls=true\n"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Redis.URL != "rediss://cache.example:6380/2" || c.Redis.Username != "persister" || c.Redis.Password != "s3cret-from-file" || c.Mongo.URI != "mongodb://u:m0ngo-pw@db.example:27017/?tls=true" {
		t.Errorf("from files: %+v %+v", c.Redis, c.Mongo)
	}
	if got := c.Chronos.DBConnections[DefaultConnRef].MongoURI; got != c.Mongo.URI {
		t.Errorf("default tenant's connection = %q", got)
	}
	sum := fmt.Sprint(c.Summary())
	for _, s := range []string{"s3cret-from-file", "m0ngo-pw"} {
		if strings.Contains(sum, s) {
			t.Errorf("Summary shows %q: %s", s, sum)
		}
	}

	for _, name := range SecretSettings {
		_, err := load(t, map[string]string{name: "redis://x:1/0", name + "_FILE": writeFile(t, "f", "v")})
		if err == nil || !strings.Contains(err.Error(), name+" and "+name+"_FILE are both set") {
			t.Errorf("%s and %s_FILE: err = %v", name, name, err)
		}
	}
	_, err = load(t, map[string]string{"REDIS_PASSWORD_FILE": "/nonexistent/pw"})
	if err == nil || !strings.Contains(err.Error(), `REDIS_PASSWORD_FILE: cannot read "/nonexistent/pw"`) {
		t.Errorf("missing file: %v", err)
	}
	_, err = load(t, map[string]string{"MONGO_URI_FILE": writeFile(t, "empty", "\n")})
	if err == nil || !strings.Contains(err.Error(), "MONGO_URI_FILE") || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("empty file: %v", err)
	}
	// A bad URL read from a file is reported without its password.
	_, err = load(t, map[string]string{"REDIS_URL_FILE": writeFile(t, "bad", "http://u:pw-in-file@h:1/0")})
	if err == nil || strings.Contains(err.Error(), "pw-in-file") {
		t.Errorf("bad URL from file: %v", err)
	}
}

// The client certificate needs its key and must load; the web config must
// be an exporter-toolkit file.
func TestSecuritySettingsValidated(t *testing.T) {
	cases := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"REDIS_TLS_CERT": "/x/client.crt"}, "REDIS_TLS_KEY: must be set with REDIS_TLS_CERT"},
		{map[string]string{"REDIS_TLS_KEY": "/x/client.key"}, "REDIS_TLS_CERT: must be set with REDIS_TLS_KEY"},
		{map[string]string{"REDIS_TLS_CERT": "/x/client.crt", "REDIS_TLS_KEY": "/x/client.key"}, `REDIS_TLS_CERT, REDIS_TLS_KEY: cannot load the client certificate "/x/client.crt"`},
		{map[string]string{"PERSISTER_WEB_CONFIG_FILE": "/x/web.yml"}, `PERSISTER_WEB_CONFIG_FILE: "/x/web.yml"`},
		{map[string]string{"PERSISTER_WEB_CONFIG_FILE": writeFile(t, "web.yml", "basic_auth_users:\n  u: not-a-hash\nbogus: 1\n")}, "PERSISTER_WEB_CONFIG_FILE"},
		{map[string]string{"PERSISTER_PROBE_ADDR": ":9464"}, "PERSISTER_PROBE_ADDR: must differ from PERSISTER_HTTP_ADDR"},
	}
	for _, c := range cases {
		_, err := load(t, c.env)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err = %v, want %q", c.env, err, c.want)
		}
	}
	ok := writeFile(t, "web.yml", "basic_auth_users:\n  prometheus: $2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi\n")
	if _, err := load(t, map[string]string{"PERSISTER_WEB_CONFIG_FILE": ok, "PERSISTER_PROBE_ADDR": ":8080"}); err != nil {
		t.Errorf("valid web config: %v", err)
	}
}

func TestRedactURIQuerySecrets(t *testing.T) {
	in := "mongodb://u:pw@h/db?tls=true&tlsCertificateKeyFile=/k.pem&tlsCertificateKeyFilePassword=kp4ss&authSource=admin"
	want := "mongodb://u:xxxxx@h/db?tls=true&tlsCertificateKeyFile=/k.pem&tlsCertificateKeyFilePassword=xxxxx&authSource=admin"
	if got := RedactURI(in); got != want {
		t.Errorf("RedactURI(%q) = %q, want %q", in, got, want)
	}
}
