package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// ImageVersion is the version stamped into the test build of the image binary.
const ImageVersion = "v0.0.0-helmcheck"

// CheckImage checks the Dockerfile and .dockerignore, then compiles the
// Dockerfile's own go build line on the filtered build context into workDir
// and checks the binary (static, stamped, has the commands the image and the
// chart run).
func (c Checker) CheckImage(ctx context.Context, workDir string) error {
	src, err := os.ReadFile(filepath.Join(c.RepoRoot, "Dockerfile"))
	if err != nil {
		return err
	}
	df, err := ParseDockerfile(src)
	if err != nil {
		return err
	}
	spec, err := c.dockerSpec()
	if err != nil {
		return err
	}
	build, runIdx, cmd, err := CheckDockerfile(df, spec)
	if err != nil {
		return fmt.Errorf("Dockerfile: %w", err)
	}
	if err := c.checkDockerignore(); err != nil {
		return err
	}
	bin, err := BuildLikeDocker(ctx, c.RepoRoot, build, runIdx, cmd, ImageVersion, workDir)
	if err != nil {
		return err
	}
	// "run" is the image's CMD; "migrate" is what the chart's migrate Job runs.
	return CheckBinary(ctx, bin, ImageVersion, []string{"run", "migrate"})
}

// dockerSpec reads what the Dockerfile must agree with: go.mod's Go version,
// the daemon's default HTTP port, which the chart's httpPort must equal too.
func (c Checker) dockerSpec() (DockerfileSpec, error) {
	mod, err := os.ReadFile(filepath.Join(c.RepoRoot, "go.mod"))
	if err != nil {
		return DockerfileSpec{}, err
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mod)
	if m == nil {
		return DockerfileSpec{}, fmt.Errorf("no go directive in go.mod")
	}
	env, err := DaemonEnv(c.RepoRoot)
	if err != nil {
		return DockerfileSpec{}, err
	}
	port := strings.TrimPrefix(env["PERSISTER_HTTP_ADDR"], ":")
	if port == "" {
		return DockerfileSpec{}, fmt.Errorf("internal/config: no default for PERSISTER_HTTP_ADDR")
	}
	vals, err := LoadValues(c.ChartDir, "values.yaml")
	if err != nil {
		return DockerfileSpec{}, err
	}
	if got := fmt.Sprint(vals["httpPort"]); got != port {
		return DockerfileSpec{}, fmt.Errorf("chart httpPort %s differs from the daemon's default port %s", got, port)
	}
	return DockerfileSpec{GoVersion: string(m[1]), HTTPPort: port}, nil
}

// checkDockerignore checks that the context leaves out the repository's
// history and build output and keeps the module.
func (c Checker) checkDockerignore() error {
	text, err := os.ReadFile(filepath.Join(c.RepoRoot, ".dockerignore"))
	if err != nil {
		return fmt.Errorf(".dockerignore: %w", err)
	}
	ig, err := NewIgnore(string(text))
	if err != nil {
		return err
	}
	var p Problems
	for _, path := range []string{".git/config", "bin/persister", "bin/ferretdb"} {
		if !ig.Excluded(path) {
			p.Addf(".dockerignore keeps %s", path)
		}
	}
	for _, path := range []string{"go.mod", "go.sum", "cmd/persister/main.go", "internal/config/config.go"} {
		if ig.Excluded(path) {
			p.Addf(".dockerignore drops %s", path)
		}
	}
	return p.Err()
}
