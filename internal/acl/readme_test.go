package acl_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chronow/persister/internal/acl"
	"github.com/chronow/persister/internal/keyspace"
	"github.com/chronow/persister/internal/testenv"
)

// README shows exactly the lines this package generates, and names every
// command it grants: the documentation and the tested ACL cannot drift.
func TestREADMEShowsTheACLLines(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	p := acl.Default
	withConfig := acl.Line(p)
	p.NoConfig = true
	noConfig := acl.Line(p)
	for _, line := range []string{withConfig, noConfig} {
		if !strings.Contains(readme, "\n"+line+"\n") {
			t.Errorf("README.md lacks the line (on a line of its own):\n%s", line)
		}
	}
	for _, c := range acl.Commands {
		if !strings.Contains(readme, "`"+strings.ToUpper(strings.ReplaceAll(c.Name, "|", " "))+"`") {
			t.Errorf("README.md's command table lacks `%s`", strings.ToUpper(strings.ReplaceAll(c.Name, "|", " ")))
		}
	}
	for _, bad := range []string{"+@all", "allcommands", "allkeys", "+@dangerous", "+@admin"} {
		if strings.Contains(withConfig, bad) {
			t.Errorf("the ACL line grants %s", bad)
		}
	}
}

func TestLineFollowsPrefixAndDB(t *testing.T) {
	got := acl.Line(acl.Params{User: "p", Password: "pw", Prefix: "a*b:", DB: 3})
	for _, want := range []string{"ACL SETUSER p reset on >pw ", ` ~a\*b:* `, ` &__keyspace@3__:a\*b:*:*:sm:* `, " +config|set "} {
		if !strings.Contains(got+" ", want) {
			t.Errorf("line %q lacks %q", got, want)
		}
	}
	if got := acl.Line(acl.Params{User: "p", Password: "pw", Prefix: "cw:", Form: keyspace.FormDoubled}); !strings.Contains(got, " ~cw:* &__keyspace@0__:cw:cw:*:*:sm:* ") {
		t.Errorf("doubled form: %s", got)
	}
	if got := acl.Line(acl.Params{User: "p", Password: "pw", Prefix: "cw:", NoConfig: true}); strings.Contains(got, "config") {
		t.Errorf("NoConfig line grants CONFIG: %s", got)
	}
}
