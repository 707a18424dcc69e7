package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIgnore(t *testing.T) {
	ig, err := NewIgnore("# comment\n.git\n/bin\n**/*.md\ndocs/*.txt\n!docs/keep.txt\ntools\n")
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{
		".git/config":            true,
		"bin/ferretdb":           true,
		"README.md":              true,
		"internal/x/NOTES.md":    true,
		"docs/a.txt":             true,
		"docs/keep.txt":          false,
		"docs/sub/a.txt":         false,
		"tools/helmcheck/go.mod": true,
		"go.mod":                 false,
		"cmd/persister/main.go":  false,
		"internal/bin/x.go":      false,
	} {
		if got := ig.Excluded(path); got != want {
			t.Errorf("Excluded(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestCopyContextHonoursIgnore(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "ctx")
	for _, f := range []string{"go.mod", "bin/big", "cmd/a/main.go", "docs/x.md"} {
		p := filepath.Join(src, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ig, err := NewIgnore("bin\n**/*.md\n")
	if err != nil {
		t.Fatal(err)
	}
	if err := CopyContext(src, dst, ig); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]bool{"go.mod": true, "cmd/a/main.go": true, "bin/big": false, "docs/x.md": false} {
		_, err := os.Stat(filepath.Join(dst, f))
		if got := err == nil; got != want {
			t.Errorf("%s copied = %v, want %v", f, got, want)
		}
	}
}

// TestDockerfile checks the real Dockerfile against the spec, then proves the
// checks fail on broken variants of it.
func TestDockerfile(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	spec, err := (Checker{ChartDir: chartDir, RepoRoot: repoRoot}).dockerSpec()
	if err != nil {
		t.Fatal(err)
	}
	check := func(text string) error {
		df, err := ParseDockerfile([]byte(text))
		if err != nil {
			return err
		}
		_, _, _, err = CheckDockerfile(df, spec)
		return err
	}
	if err := check(string(src)); err != nil {
		t.Fatalf("real Dockerfile: %v", err)
	}
	if err := (Checker{ChartDir: chartDir, RepoRoot: repoRoot}).checkDockerignore(); err != nil {
		t.Fatalf("real .dockerignore: %v", err)
	}
	breaks := []struct{ old, new, want string }{
		{"FROM gcr.io/distroless/static-debian12:nonroot", "FROM alpine:3", "want gcr.io/distroless/static-debian12:nonroot"},
		{"golang:${GO_VERSION} AS build", "golang:1.22 AS build", "want golang:"},
		{"ENV CGO_ENABLED=0 ", "ENV ", "CGO_ENABLED=0"},
		{"-trimpath ", "", "-trimpath"},
		{`-s -w -X main.version=${VERSION}`, `-X main.version=${VERSION}`, "-ldflags"},
		{"ARG VERSION=dev", "ARG OTHER=dev", "ARG VERSION"},
		{"USER nonroot:nonroot", "USER root", "USER"},
		{"EXPOSE 9464", "EXPOSE 8080", "EXPOSE"},
		{`ENTRYPOINT ["/persister"]`, `ENTRYPOINT /persister`, "ENTRYPOINT"},
		{`CMD ["run"]`, `CMD ["version"]`, "CMD"},
		{"COPY --from=build /out/persister /persister", "COPY --from=build /out/persister /persister\nRUN [\"/persister\", \"version\"]", "no shell"},
		{"./cmd/persister\n", "./cmd/persister-demo\n", "./cmd/persister"},
	}
	for _, b := range breaks {
		if !strings.Contains(string(src), b.old) {
			t.Errorf("Dockerfile lacks %q: the test is stale", b.old)
			continue
		}
		err := check(strings.Replace(string(src), b.old, b.new, 1))
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("Dockerfile with %q -> %q: got %v, want an error containing %q", b.old, b.new, err, b.want)
		}
	}
}
