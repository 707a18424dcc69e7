package testenv

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
)

// BuildPersister builds ./cmd/persister of the module at root into dir and
// returns the binary's path.
func BuildPersister(ctx context.Context, root, dir string) (string, error) {
	out := filepath.Join(dir, "persister")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/persister")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/persister: %w\n%s", err, b)
	}
	return out, nil
}
