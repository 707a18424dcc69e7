package testenv

import (
	"context"
	"os/exec"
	"strings"
	"testing"
)

// BuildPersister builds a binary that runs (its version subcommand
// answers), and a build error comes back with go build's output.
func TestBuildPersister(t *testing.T) {
	ctx := context.Background()
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := BuildPersister(ctx, root, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, bin, "version").CombinedOutput(); err != nil || len(out) == 0 {
		t.Fatalf("%s version: %v, output %q", bin, err, out)
	}
	if _, err := BuildPersister(ctx, t.TempDir(), t.TempDir()); err == nil || !strings.Contains(err.Error(), "go build ./cmd/persister") {
		t.Fatalf("build outside the module: got %v, want the go build error", err)
	}
}
