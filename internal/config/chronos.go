package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strings"
)

// The collections of a messaging database.
const (
	CollMessages     = "messages"
	CollDeadLetters  = "dead_letters"
	CollTopics       = "topics"
	CollSharedMemory = "shared_memory"
)

// Collections lists the four collections of a messaging database.
var Collections = [...]string{CollMessages, CollDeadLetters, CollTopics, CollSharedMemory}

// DefaultConnRef and DefaultTenant are what Chronow derives from MONGO_URI alone.
const (
	DefaultConnRef = "mongo-primary"
	DefaultTenant  = "default"
	DefaultDBName  = "chronos_messaging_default"
)

// Chronos is the part of a chronos-db config the persister reads.
type Chronos struct {
	DBConnections     map[string]DBConnection `json:"dbConnections"`
	SpacesConnections map[string]any          `json:"spacesConnections,omitempty"`
	Databases         struct {
		Messaging *struct {
			TenantDatabases []TenantDatabase `json:"tenantDatabases"`
		} `json:"messaging"`
	} `json:"databases"`
}

// DBConnection is one named MongoDB connection.
type DBConnection struct {
	MongoURI string `json:"mongoUri"`
}

// TenantDatabase routes one tenant to a database on a connection.
type TenantDatabase struct {
	TenantID     string `json:"tenantId"`
	DBConnRef    string `json:"dbConnRef"`
	SpaceConnRef string `json:"spaceConnRef,omitempty"`
	Bucket       string `json:"bucket,omitempty"`
	DBName       string `json:"dbName"`
	// RetentionDays maps a collection name to a retention in days; an
	// extension of the seed's section 5, applied by migrate as TTL indexes.
	RetentionDays map[string]int `json:"retentionDays,omitempty"`
}

// DefaultChronos returns the config Chronow derives from MONGO_URI alone.
func DefaultChronos(mongoURI string) Chronos {
	var c Chronos
	c.DBConnections = map[string]DBConnection{DefaultConnRef: {MongoURI: mongoURI}}
	c.Databases.Messaging = &struct {
		TenantDatabases []TenantDatabase `json:"tenantDatabases"`
	}{TenantDatabases: []TenantDatabase{{TenantID: DefaultTenant, DBConnRef: DefaultConnRef, DBName: DefaultDBName}}}
	return c
}

// ReadChronos reads and parses a chronos-db JSON config file. It does not
// validate it; Validate does.
func ReadChronos(path string) (*Chronos, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: CHRONOS_CONFIG: cannot read %q: %w", ErrInvalid, path, err)
	}
	return ParseChronos(path, data)
}

// ParseChronos parses a chronos-db JSON config; name is used in errors.
func ParseChronos(name string, data []byte) (*Chronos, error) {
	var c Chronos
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&c); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			line, col := lineCol(data, se.Offset)
			return nil, fmt.Errorf("%w: CHRONOS_CONFIG %s: invalid JSON at line %d column %d: %v", ErrInvalid, name, line, col, se)
		case errors.As(err, &te):
			return nil, fmt.Errorf("%w: CHRONOS_CONFIG %s: field %q must be %s, got JSON %s", ErrInvalid, name, te.Field, te.Type, te.Value)
		default:
			return nil, fmt.Errorf("%w: CHRONOS_CONFIG %s: %v", ErrInvalid, name, err)
		}
	}
	return &c, nil
}

func lineCol(data []byte, off int64) (int, int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	before := data[:off]
	line := bytes.Count(before, []byte("\n")) + 1
	col := int(off) - bytes.LastIndexByte(before, '\n')
	return line, col
}

// Tenants returns the configured tenant databases.
func (c *Chronos) Tenants() []TenantDatabase {
	if c.Databases.Messaging == nil {
		return nil
	}
	return c.Databases.Messaging.TenantDatabases
}

// Tenant returns the tenant database for id.
func (c *Chronos) Tenant(id string) (TenantDatabase, bool) {
	for _, t := range c.Tenants() {
		if t.TenantID == id {
			return t, true
		}
	}
	return TenantDatabase{}, false
}

// Validate checks connections and tenant routing.
func (c *Chronos) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
	}
	names := make([]string, 0, len(c.DBConnections))
	for name := range c.DBConnections {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := ValidateMongoURI(c.DBConnections[name].MongoURI); err != nil {
			bad(fmt.Sprintf("dbConnections[%q].mongoUri", name), "%v", err)
		}
	}
	tds := c.Tenants()
	if len(tds) == 0 {
		bad("databases.messaging.tenantDatabases", "no tenant configured")
	}
	seenTenant := map[string]int{}
	seenDB := map[string]int{}
	for i, t := range tds {
		field := fmt.Sprintf("databases.messaging.tenantDatabases[%d]", i)
		switch {
		case t.TenantID == "":
			bad(field+".tenantId", "must not be empty")
		case strings.ContainsAny(t.TenantID, ":*?[]\\"):
			bad(field+".tenantId", "%q must not contain ':' or glob characters (it is a Redis key segment)", t.TenantID)
		}
		if j, dup := seenTenant[t.TenantID]; dup && t.TenantID != "" {
			bad(field+".tenantId", "duplicate tenantId %q (also tenantDatabases[%d])", t.TenantID, j)
		}
		seenTenant[t.TenantID] = i
		if _, ok := c.DBConnections[t.DBConnRef]; !ok {
			bad(field+".dbConnRef", "unknown connection %q (dbConnections has %s)", t.DBConnRef, quoteList(names))
		}
		if err := ValidateDBName(t.DBName); err != nil {
			bad(field+".dbName", "%v", err)
		}
		key := t.DBConnRef + "\x00" + strings.ToLower(t.DBName)
		if j, dup := seenDB[key]; dup && t.DBName != "" {
			bad(field+".dbName", "%q on connection %q is also used by tenantDatabases[%d] (names that differ only by case clash in MongoDB; each tenant needs its own database)", t.DBName, t.DBConnRef, j)
		}
		seenDB[key] = i
		for coll, days := range t.RetentionDays {
			if !isCollection(coll) {
				bad(field+".retentionDays", "unknown collection %q (want one of %s)", coll, quoteList(Collections[:]))
			} else if days <= 0 {
				bad(fmt.Sprintf("%s.retentionDays[%q]", field, coll), "must be > 0 days, got %d", days)
			}
		}
	}
	return errors.Join(errs...)
}

func isCollection(name string) bool {
	for _, c := range Collections {
		if c == name {
			return true
		}
	}
	return false
}

func quoteList(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return strings.Join(q, ", ")
}

// ValidateDBName applies MongoDB's database naming rules.
func ValidateDBName(name string) error {
	switch {
	case name == "":
		return errors.New("must not be empty")
	case len(name) >= 64:
		return fmt.Errorf("%q is %d bytes, must be fewer than 64", name, len(name))
	case strings.ContainsAny(name, "/\\. \"$\x00"):
		return fmt.Errorf("%q contains a character MongoDB forbids in database names (/\\. \"$ or NUL)", name)
	}
	switch strings.ToLower(name) {
	case "admin", "local", "config":
		return fmt.Errorf("%q is a MongoDB system database", name)
	}
	return nil
}

// ValidateMongoURI checks that uri is a mongodb:// or mongodb+srv:// URI with
// a host. Errors never contain the password.
func ValidateMongoURI(uri string) error {
	if uri == "" {
		return errors.New("must not be empty")
	}
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok || (scheme != "mongodb" && scheme != "mongodb+srv") {
		return fmt.Errorf("must start with mongodb:// or mongodb+srv://, got %s", RedactURI(uri))
	}
	// Hosts may be a comma-separated list, which net/url rejects; check the
	// authority by hand.
	auth := rest
	if i := strings.IndexAny(auth, "/?"); i >= 0 {
		auth = auth[:i]
	}
	if at := strings.LastIndexByte(auth, '@'); at >= 0 {
		auth = auth[at+1:]
	}
	if auth == "" {
		return fmt.Errorf("no host in %s", RedactURI(uri))
	}
	for _, h := range strings.Split(auth, ",") {
		if h == "" {
			return fmt.Errorf("empty host in %s", RedactURI(uri))
		}
	}
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		if _, err := url.ParseQuery(rest[i+1:]); err != nil {
			return fmt.Errorf("options of %s do not parse: %v", RedactURI(uri), err)
		}
	}
	return nil
}

// redactUserinfo replaces the password of a URI (redis or mongodb, one or
// several hosts) with "xxxxx". RedactURI (security.go) also redacts the
// secrets of the query.
func redactUserinfo(uri string) string {
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return uri
	}
	end := len(rest)
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		end = i
	}
	at := strings.LastIndexByte(rest[:end], '@')
	if at < 0 {
		return uri
	}
	user, _, hasPw := strings.Cut(rest[:at], ":")
	if !hasPw {
		return uri
	}
	return scheme + "://" + user + ":xxxxx" + rest[at:]
}
