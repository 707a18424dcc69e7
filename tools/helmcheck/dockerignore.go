package main

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
)

// Ignore is a .dockerignore: patterns relative to the context root, `*` and
// `?` within one path element, `**` across elements, `!` re-includes, the
// last matching pattern wins, and a pattern matching a directory excludes
// everything under it (Docker's rules).
type Ignore struct {
	rules       []ignoreRule
	hasExcepted bool
}

type ignoreRule struct {
	pattern string
	re      *regexp.Regexp
	include bool // a "!" pattern
}

// NewIgnore parses the text of a .dockerignore.
func NewIgnore(text string) (*Ignore, error) {
	ig := &Ignore{}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r := ignoreRule{}
		if rest, ok := strings.CutPrefix(line, "!"); ok {
			r.include, line = true, strings.TrimSpace(rest)
			ig.hasExcepted = true
		}
		line = strings.TrimPrefix(path.Clean("/"+line), "/")
		r.pattern = line
		re, err := globRegexp(line)
		if err != nil {
			return nil, fmt.Errorf(".dockerignore pattern %q: %w", line, err)
		}
		r.re = re
		ig.rules = append(ig.rules, r)
	}
	return ig, nil
}

func globRegexp(p string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case strings.HasPrefix(p[i:], "**/"):
			b.WriteString("(.*/)?")
			i += 2
		case strings.HasPrefix(p[i:], "**"):
			b.WriteString(".*")
			i++
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

// Excluded reports whether the slash-separated relative path is left out of
// the build context.
func (ig *Ignore) Excluded(rel string) bool {
	excluded := false
	for _, r := range ig.rules {
		if r.matches(rel) {
			excluded = !r.include
		}
	}
	return excluded
}

func (r ignoreRule) matches(rel string) bool {
	for p := rel; p != "." && p != "/" && p != ""; p = path.Dir(p) {
		if r.re.MatchString(p) {
			return true
		}
	}
	return false
}

// CopyContext copies the files of src not excluded by ig into dst.
func CopyContext(src, dst string, ig *Ignore) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return os.MkdirAll(dst, 0o755)
		}
		if ig.Excluded(rel) {
			if d.IsDir() && !ig.hasExcepted {
				return filepath.SkipDir
			}
			return nil
		}
		return copyEntry(p, filepath.Join(dst, filepath.FromSlash(rel)), d)
	})
}
