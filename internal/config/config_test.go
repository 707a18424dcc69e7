package config

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sethvargo/go-envconfig"
)

func load(t *testing.T, env map[string]string) (*Config, error) {
	t.Helper()
	if _, ok := env["PERSISTER_CONSUMER"]; !ok {
		env["PERSISTER_CONSUMER"] = "test-consumer"
	}
	return LoadFrom(context.Background(), envconfig.MapLookuper(env))
}

func writeChronos(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "chronos.json")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaults(t *testing.T) {
	c, err := load(t, map[string]string{})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if got, want := c.Redis.URL, "redis://127.0.0.1:6379/0"; got != want {
		t.Errorf("REDIS_URL = %q, want %q", got, want)
	}
	if got, want := c.Redis.KeyPrefix, "cw:"; got != want {
		t.Errorf("prefix = %q, want %q", got, want)
	}
	td := c.Chronos.Tenants()
	if len(td) != 1 || td[0].TenantID != "default" || td[0].DBName != "chronos_messaging_default" || td[0].DBConnRef != "mongo-primary" {
		t.Errorf("tenants = %+v, want the default tenant", td)
	}
	if c.Persister.Group != "persister" || c.Persister.HTTPAddr != ":9464" {
		t.Errorf("group/http = %q/%q", c.Persister.Group, c.Persister.HTTPAddr)
	}
}

func TestEmptyPrefixAllowed(t *testing.T) {
	c, err := load(t, map[string]string{"REDIS_KEY_PREFIX": ""})
	if err != nil {
		t.Fatal(err)
	}
	if c.Redis.KeyPrefix != "" {
		t.Errorf("prefix = %q, want empty", c.Redis.KeyPrefix)
	}
}

func TestChronosConfigLoaded(t *testing.T) {
	p := writeChronos(t, `{"dbConnections":{"mongo-primary":{"mongoUri":"mongodb://u:pw@localhost:27017"}},
"spacesConnections":{},"databases":{"messaging":{"tenantDatabases":[
{"tenantId":"default","dbConnRef":"mongo-primary","spaceConnRef":"","bucket":"","dbName":"chronos_messaging_default"},
{"tenantId":"tenant-a","dbConnRef":"mongo-primary","dbName":"chronos_messaging_tenant_a","retentionDays":{"messages":30}}]}}}`)
	c, err := load(t, map[string]string{"CHRONOS_CONFIG": p})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(c.Chronos.Tenants()); got != 2 {
		t.Fatalf("tenants = %d, want 2", got)
	}
	if td, ok := c.Chronos.Tenant("tenant-a"); !ok || td.RetentionDays["messages"] != 30 {
		t.Errorf("tenant-a = %+v, %v", td, ok)
	}
}

func TestBadConfig(t *testing.T) {
	const conn = `"dbConnections":{"mongo-primary":{"mongoUri":"mongodb://localhost:27017"}}`
	tenants := func(entries string) string {
		return `{` + conn + `,"databases":{"messaging":{"tenantDatabases":[` + entries + `]}}}`
	}
	tests := []struct {
		name    string
		env     map[string]string
		chronos string
		want    []string // substrings of the error
	}{
		{"unknown dbConnRef", nil, tenants(`{"tenantId":"a","dbConnRef":"nope","dbName":"db_a"}`), []string{"tenantDatabases[0].dbConnRef", `unknown connection "nope"`}},
		{"duplicate tenant", nil, tenants(`{"tenantId":"a","dbConnRef":"mongo-primary","dbName":"db_a"},{"tenantId":"a","dbConnRef":"mongo-primary","dbName":"db_b"}`), []string{"tenantDatabases[1].tenantId", `duplicate tenantId "a"`}},
		{"empty db name", nil, tenants(`{"tenantId":"a","dbConnRef":"mongo-primary","dbName":""}`), []string{"tenantDatabases[0].dbName", "must not be empty"}},
		{"dot in db name", nil, tenants(`{"tenantId":"a","dbConnRef":"mongo-primary","dbName":"a.b"}`), []string{"tenantDatabases[0].dbName", "forbids"}},
		{"slash in db name", nil, tenants(`{"tenantId":"a","dbConnRef":"mongo-primary","dbName":"../x"}`), []string{"dbName", "forbids"}},
		{"dollar in db name", nil, tenants(`{"tenantId":"a","dbConnRef":"mongo-primary","dbName":"$x"}`), []string{"dbName", "forbids"}},
		{"long db name", nil, tenants(`{"tenantId":"a","dbConnRef":"mongo-primary","dbName":"` + strings.Repeat("x", 64) + `"}`), []string{"dbName", "fewer than 64"}},
		{"case clash", nil, tenants(`{"tenantId":"a","dbConnRef":"mongo-primary","dbName":"Acme"},{"tenantId":"b","dbConnRef":"mongo-primary","dbName":"acme"}`), []string{"tenantDatabases[1].dbName", "differ only by case"}},
		{"colon in tenant", nil, tenants(`{"tenantId":"a:b","dbConnRef":"mongo-primary","dbName":"db"}`), []string{"tenantDatabases[0].tenantId", "must not contain ':'"}},
		{"no tenants", nil, `{` + conn + `,"databases":{}}`, []string{"tenantDatabases", "no tenant"}},
		{"bad mongo uri", nil, `{"dbConnections":{"p":{"mongoUri":"http://u:SECRETPW@h"}},"databases":{"messaging":{"tenantDatabases":[{"tenantId":"a","dbConnRef":"p","dbName":"d"}]}}}`, []string{`dbConnections["p"].mongoUri`, "mongodb://"}},
		{"bad json", nil, `{"dbConnections": {,}`, []string{"CHRONOS_CONFIG", "line 1"}},
		{"wrong type", nil, `{"dbConnections": []}`, []string{"CHRONOS_CONFIG", "dbConnections"}},
		{"bad retention", nil, tenants(`{"tenantId":"a","dbConnRef":"mongo-primary","dbName":"d","retentionDays":{"msgs":3}}`), []string{"retentionDays", `unknown collection "msgs"`}},
		{"bad redis url", map[string]string{"REDIS_URL": "http://:SECRETPW@x"}, "", []string{"REDIS_URL", "scheme"}},
		{"bad batch size", map[string]string{"PERSISTER_BATCH_SIZE": "0"}, "", []string{"PERSISTER_BATCH_SIZE", "> 0"}},
		{"unparsable int", map[string]string{"PERSISTER_BATCH_SIZE": "ten"}, "", []string{"PERSISTER_BATCH_SIZE"}},
		{"bad duration", map[string]string{"PERSISTER_BATCH_LINGER": "-1s"}, "", []string{"PERSISTER_BATCH_LINGER", "positive"}},
		{"chronow group", map[string]string{"PERSISTER_GROUP": "sub:orders"}, "", []string{"PERSISTER_GROUP"}},
		{"bad cluster nodes", map[string]string{"REDIS_CLUSTER_NODES": "a:1,b:2"}, "", []string{"REDIS_CLUSTER_NODES", "JSON array"}},
		{"bad log level", map[string]string{"PERSISTER_LOG_LEVEL": "loud"}, "", []string{"PERSISTER_LOG_LEVEL"}},
		{"bad sm notify", map[string]string{"PERSISTER_SM_NOTIFY": "on"}, "", []string{"PERSISTER_SM_NOTIFY", "auto or off"}},
		{"bad sm delete mode", map[string]string{"PERSISTER_SM_DELETE_MODE": "delete"}, "", []string{"PERSISTER_SM_DELETE_MODE", "keep or tombstone"}},
		{"bad sm flush interval", map[string]string{"PERSISTER_SM_FLUSH_INTERVAL": "0s"}, "", []string{"PERSISTER_SM_FLUSH_INTERVAL", "positive"}},
		{"missing chronos file", map[string]string{"CHRONOS_CONFIG": "/nonexistent/chronos.json"}, "", []string{"CHRONOS_CONFIG", "cannot read"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range tt.env {
				env[k] = v
			}
			if tt.chronos != "" {
				env["CHRONOS_CONFIG"] = writeChronos(t, tt.chronos)
			}
			_, err := load(t, env)
			if err == nil {
				t.Fatalf("got no error, want one containing %q", tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "SECRETPW") {
				t.Errorf("error leaks the password: %q", err)
			}
		})
	}
}

func TestRedactURI(t *testing.T) {
	tests := map[string]string{
		"mongodb://user:pw@h1:1,h2:2/db?x=1": "mongodb://user:xxxxx@h1:1,h2:2/db?x=1",
		"redis://:pw@localhost:6379/0":       "redis://:xxxxx@localhost:6379/0",
		"mongodb://h:1":                      "mongodb://h:1",
		"mongodb://user@h":                   "mongodb://user@h",
		"mongodb://u:p@ss@h/x":               "mongodb://u:xxxxx@h/x",
	}
	for in, want := range tests {
		if got := RedactURI(in); got != want {
			t.Errorf("RedactURI(%q) = %q, want %q", in, got, want)
		}
	}
}
