package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// envTag matches a go-envconfig struct tag: env:"NAME" or env:"NAME, default=X".
var envTag = regexp.MustCompile(`env:"([A-Z][A-Z0-9_]*)((?:,[^"]*)?)"`)

// DaemonEnv returns the environment names the daemon reads, with their
// defaults, taken from the env tags of internal/config (not its tests), so
// the chart is checked against what the code reads today.
func DaemonEnv(repoRoot string) (map[string]string, error) {
	dir := filepath.Join(repoRoot, "internal", "config")
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for _, m := range envTag.FindAllStringSubmatch(string(src), -1) {
			def := ""
			for _, opt := range strings.Split(m[2], ",") {
				if v, ok := strings.CutPrefix(strings.TrimSpace(opt), "default="); ok {
					def = v
				}
			}
			env[m[1]] = def
		}
	}
	if len(env) == 0 {
		return nil, fmt.Errorf("no env tags found in %s", dir)
	}
	return env, nil
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
