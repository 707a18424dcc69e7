package interop

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/chronow/persister/internal/testenv"
)

// TestVendoredChronowIsVerbatim checks that third_party/chronow is a
// byte-identical copy of the Chronow release kept beside the repository
// (../shared/vendor/chronow), so the interop test runs the real library and
// nothing else. Without that directory the check is skipped, except in CI.
func TestVendoredChronowIsVerbatim(t *testing.T) {
	root := testenv.RepoRoot(t)
	ours := filepath.Join(root, "third_party", "chronow")
	lic, err := os.ReadFile(filepath.Join(ours, "LICENSE"))
	if err != nil {
		t.Fatalf("the vendored Chronow must keep its licence: %v", err)
	}
	if !bytes.Contains(lic, []byte("MIT License")) {
		t.Errorf("third_party/chronow/LICENSE is not Chronow's MIT licence")
	}
	if _, err := os.Stat(filepath.Join(ours, "ORIGIN")); err != nil {
		t.Errorf("third_party/chronow/ORIGIN (where the copy comes from) is missing: %v", err)
	}

	upstream := filepath.Join(root, "..", "shared", "vendor", "chronow")
	if _, err := os.Stat(upstream); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing (CI has the Chronow release there): %v", upstream, err)
		}
		t.Skipf("%s not found: cannot compare the vendored copy", upstream)
	}
	want := tree(t, upstream)
	got := tree(t, ours)
	var names []string
	for n := range want {
		names = append(names, n)
	}
	for n := range got {
		if _, ok := want[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		w, inWant := want[n]
		g, inGot := got[n]
		switch {
		case !inGot:
			t.Errorf("third_party/chronow/%s is missing (it is in %s)", n, upstream)
		case !inWant:
			t.Errorf("third_party/chronow/%s is not in %s: the copy must be verbatim", n, upstream)
		case !bytes.Equal(w, g):
			t.Errorf("third_party/chronow/%s differs from %s/%s: copy it again (cp -r)", n, upstream, n)
		}
	}
	t.Logf("%d files of %s compared", len(want), upstream)
}

// tree reads every regular file under dir, by slash path.
func tree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		out[strings.ReplaceAll(rel, string(filepath.Separator), "/")] = b
		return nil
	})
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	return out
}
