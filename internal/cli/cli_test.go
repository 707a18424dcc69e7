package cli

import (
	"bytes"
	"flag"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		code   int
		ok     bool
		stderr string
	}{
		{[]string{"-n", "3"}, 0, true, ""},
		{[]string{"-h"}, 0, false, ""},
		{[]string{"-bogus"}, 2, false, ""},
		{[]string{"extra"}, 2, false, `tool: unexpected arguments ["extra"]` + "\n"},
	} {
		var stderr bytes.Buffer
		fs := flag.NewFlagSet("tool", flag.ContinueOnError)
		fs.SetOutput(&bytes.Buffer{})
		fs.Int("n", 0, "")
		code, ok := Parse(fs, tc.args, &stderr)
		if code != tc.code || ok != tc.ok {
			t.Errorf("Parse(%q) = %d, %v; want %d, %v", tc.args, code, ok, tc.code, tc.ok)
		}
		if tc.stderr != "" && stderr.String() != tc.stderr {
			t.Errorf("Parse(%q) stderr %q, want %q", tc.args, stderr.String(), tc.stderr)
		}
	}
}
