package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// Parse parses args into fs, which takes no positional arguments. When it
// returns false the command must exit with code: 0 after -help, 2 after an
// error (already written to stderr).
func Parse(fs *flag.FlagSet, args []string, stderr io.Writer) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments %q\n", fs.Name(), fs.Args())
		return 2, false
	}
	return 0, true
}
