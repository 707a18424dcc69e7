package e2e

import (
	"encoding/json"
	"os"
)

// Chronos is a chronos-db config as the tests write it: named MongoDB
// connections, and the messaging database of each tenant.
type Chronos struct {
	// Conns maps a connection name to its mongoUri.
	Conns map[string]string
	// Tenants are the messaging databases, in order.
	Tenants []ChronosTenant
}

// ChronosTenant is one tenant's messaging database.
type ChronosTenant struct {
	ID, Conn, DB string
}

// Write writes the config, as chronos-db reads it, to path.
func (c Chronos) Write(path string) error {
	type td struct {
		TenantID  string `json:"tenantId"`
		DBConnRef string `json:"dbConnRef"`
		DBName    string `json:"dbName"`
	}
	conns := map[string]any{}
	for name, uri := range c.Conns {
		conns[name] = map[string]string{"mongoUri": uri}
	}
	var list []td
	for _, tn := range c.Tenants {
		list = append(list, td{TenantID: tn.ID, DBConnRef: tn.Conn, DBName: tn.DB})
	}
	doc := map[string]any{
		"dbConnections":     conns,
		"spacesConnections": map[string]any{},
		"databases":         map[string]any{"messaging": map[string]any{"tenantDatabases": list}},
	}
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}
