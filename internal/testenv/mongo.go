package testenv

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/mongo/readpref"
)

// EnvFerretDBLogLevel sets FerretDB's -log-level in tests (default "info").
const EnvFerretDBLogLevel = "PERSISTER_FERRETDB_LOG_LEVEL"

// Mongo is a Mongo-compatible server (FerretDB with SQLite, bin/ferretdb)
// started for one test.
type Mongo struct {
	Addr     string // 127.0.0.1:port
	URI      string // mongodb://127.0.0.1:port/
	Port     int
	StateDir string // SQLite directory, kept across Restart
	Log      string // path of the server's stdout/stderr log

	serverProc
}

// MongoOption configures StartMongo.
type MongoOption func(*mongoConfig)

type mongoConfig struct {
	pki *PKI
}

// WithMongoTLS makes the server TLS-only with the PKI's server certificate,
// requiring a client certificate signed by its CA. URI then carries tls=true,
// tlsCAFile and tlsCertificateKeyFile (the PKI's ClientPEM).
func WithMongoTLS(p *PKI) MongoOption {
	return func(c *mongoConfig) { c.pki = p }
}

// ferretDBInRepo returns the module's bin/ferretdb (where it is looked for
// when $PERSISTER_FERRETDB_BIN is empty); the file must exist.
func ferretDBInRepo() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", fmt.Errorf("FerretDB binary (%v)", err)
	}
	bin := filepath.Join(root, "bin", "ferretdb")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("FerretDB binary (%s; $%s is empty)", bin, EnvFerretDBBin)
	}
	return bin, nil
}

// StartMongo starts FerretDB on a free port with a temp state dir and waits
// until a mongo-driver ping succeeds. The server is killed on cleanup.
func StartMongo(t testing.TB, opts ...MongoOption) *Mongo {
	t.Helper()

	m := StartMongoLater(t, opts...)
	m.Start(t)

	return m
}

// StartMongoLater prepares a server (binary, port, state dir, URI) without
// starting it, for tests where Mongo is absent at first: connections to URI
// are refused until m.Start(t).
func StartMongoLater(t testing.TB, opts ...MongoOption) *Mongo {
	t.Helper()

	cfg := applyOptions(opts)
	s := newTestServer(t, ferretDB, "state")

	logLevel := os.Getenv(EnvFerretDBLogLevel)
	if logLevel == "" {
		logLevel = "info"
	}

	m := &Mongo{
		Addr:     s.addr,
		URI:      "mongodb://" + s.addr + "/",
		Port:     s.port,
		StateDir: s.data,
		Log:      filepath.Join(s.tmp, "ferretdb.log"),
	}
	args := []string{"-listen-addr", s.addr, "-state-dir", s.data, "-log-level", logLevel}
	if p := cfg.pki; p != nil {
		// TLS only, with a client certificate required (FerretDB asks for
		// one whenever it is given a CA).
		args = []string{"-listen-addr", "", "-tls-listen-addr", s.addr,
			"-tls-cert-file", p.ServerCert, "-tls-key-file", p.ServerKey, "-tls-ca-file", p.CACert,
			"-state-dir", s.data, "-log-level", logLevel}
		m.URI = "mongodb://" + s.addr + "/?" + url.Values{
			"tls":                   {"true"},
			"tlsCAFile":             {p.CACert},
			"tlsCertificateKeyFile": {p.ClientPEM},
		}.Encode()
	}
	m.p = s.proc(t, "ferretdb", args, m.Log)

	return m
}

// Start starts a server prepared by StartMongoLater (or killed by Kill) and
// waits until it answers a ping. It fails the test if it is already running.
func (m *Mongo) Start(t testing.TB) {
	t.Helper()

	m.p.startAndWait(t, m.ping)
}

func (m *Mongo) ping(timeout time.Duration) error {
	if err := dialCheck(m.Addr, timeout); err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*timeout)
	defer cancel()

	c, err := mongo.Connect(ctx, options.Client().
		ApplyURI(m.URI).
		SetDirect(true).
		SetConnectTimeout(timeout).
		SetServerSelectionTimeout(timeout))
	if err != nil {
		return err
	}

	defer func() { _ = c.Disconnect(context.Background()) }()

	return c.Ping(ctx, readpref.Primary())
}

// Client returns a new mongo-driver client for this server (driver default
// options), disconnected on cleanup. The server need not be running yet.
func (m *Mongo) Client(t testing.TB) *mongo.Client {
	t.Helper()

	c, err := mongo.Connect(context.Background(), options.Client().ApplyURI(m.URI))
	if err != nil {
		t.Fatalf("testenv: mongo.Connect(%s): %v", m.URI, err)
	}

	t.Cleanup(func() {
		m.p.resumeIfPaused()

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()

		_ = c.Disconnect(ctx)
	})

	return c
}

// Restart starts the server again on the same port with the same state dir
// (data written before Kill is still there) and waits until it answers a
// ping. A server still running is killed first.
func (m *Mongo) Restart(t testing.TB) {
	t.Helper()

	m.Kill(t)
	m.Start(t)
}
