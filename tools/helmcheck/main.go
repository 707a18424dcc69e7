// Command helmcheck lints and renders the persister Helm chart in every mode
// with the Helm library (no helm binary needed), checks the manifests, and
// checks the Dockerfile by compiling its own build command.
//
//	helmcheck                      # every check (what CI runs through go test)
//	helmcheck render [-f v.yaml]   # print the manifests, like helm template
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

func main() {
	log.SetOutput(io.Discard) // Helm's lint logs each failure it also returns
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "helmcheck:", err)
		stop()
		os.Exit(1)
	}
}

// valueFiles is a repeatable -f flag.
type valueFiles []string

func (v *valueFiles) String() string     { return strings.Join(*v, ",") }
func (v *valueFiles) Set(s string) error { *v = append(*v, s); return nil }

func run(ctx context.Context, args []string, stdout io.Writer) error {
	cmd := "check"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("helmcheck "+cmd, flag.ContinueOnError)
	root := fs.String("repo", "", "repository root (default: found from the working directory)")
	chartDir := fs.String("chart", "", "chart directory (default: <repo>/deploy/helm/persister)")
	var files valueFiles
	fs.Var(&files, "f", "values file for render (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *root == "" {
		r, err := findRepoRoot()
		if err != nil {
			return err
		}
		*root = r
	}
	if *chartDir == "" {
		*chartDir = filepath.Join(*root, "deploy", "helm", "persister")
	}
	c := Checker{ChartDir: *chartDir, RepoRoot: *root}
	switch cmd {
	case "check":
		if err := c.Check(); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "chart %s: %d scenarios, %d refusals and the sidecar template checked\n", c.ChartDir, len(Scenarios), len(Refusals))
		dir, err := os.MkdirTemp("", "helmcheck-image-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if err := c.CheckImage(ctx, dir); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "Dockerfile: checked and its go build compiled on the .dockerignore'd context")
		return nil
	case "render":
		vals, err := LoadValues(".", files...)
		if err != nil {
			return err
		}
		_, r, err := c.render(vals)
		if err != nil {
			return err
		}
		if err := WriteManifests(stdout, r); err != nil {
			return err
		}
		if r.Notes != "" {
			_, err = fmt.Fprintf(stdout, "# NOTES.txt\n%s\n", commentOut(r.Notes))
		}
		return err
	default:
		return fmt.Errorf("unknown command %q (check or render)", cmd)
	}
}

func commentOut(s string) string {
	return "# " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n# ")
}

// findRepoRoot walks up from the working directory to the persister module.
func findRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		mod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(mod), "module github.com/chronow/persister\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("persister repository root not found above the working directory (use -repo)")
		}
		dir = parent
	}
}
