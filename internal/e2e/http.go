package e2e

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
)

// LogBuffer is a log sink the daemon's goroutines may share. With T set,
// every write is also logged to the test (until it ends).
type LogBuffer struct {
	T  testing.TB
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.T != nil {
		_, _ = testWriter{l.T}.Write(p)
	}
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// HTTPGet GETs u with c, with basic auth when user is not empty, and
// returns the status code and the body.
func HTTPGet(c *http.Client, u, user, pass string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return 0, "", err
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// KeyMaterial returns the first base64 line of a PEM private key: a piece
// of the secret that must never show in a log.
func KeyMaterial(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 2 || len(lines[1]) < 40 {
		t.Fatalf("%s: not a PEM key", path)
	}
	return lines[1]
}
