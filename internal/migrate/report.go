package migrate

import (
	"fmt"
	"io"
	"strings"
)

// WriteText prints tenant reports for an operator.
func WriteText(w io.Writer, reps []TenantReport) error {
	for i, r := range reps {
		if i > 0 {
			fmt.Fprintln(w)
		}
		created := "created"
		if r.DryRun {
			created = "to create"
		}
		title := fmt.Sprintf("tenant %s: database %s on connection %s", r.Tenant, r.Database, r.Connection)
		if r.DryRun {
			title += " (dry run: nothing written)"
		}
		fmt.Fprintln(w, title)
		list(w, "collections "+created, r.CreatedCollections)
		list(w, "collections existing", r.ExistingCollections)
		list(w, "indexes "+created, r.CreatedIndexes)
		list(w, "indexes existing", r.ExistingIndexes)
		if len(r.Retention) == 0 {
			fmt.Fprintf(w, "  %-22s none configured (retentionDays)\n", "retention:")
		}
		for _, x := range r.Retention {
			how := fmt.Sprintf("%d days", x.Days)
			if x.Days == 0 {
				how = "not configured"
			}
			line := fmt.Sprintf("%s: %s, TTL index %s on %s (expireAfterSeconds %d): %s",
				x.Collection, how, x.Index, x.Field, x.ExpireAfterSeconds, strings.ToUpper(x.Status))
			if x.Detail != "" {
				line += " (" + x.Detail + ")"
			}
			fmt.Fprintf(w, "  %-22s %s\n", "retention:", line)
		}
		for _, x := range r.Sharding {
			line := fmt.Sprintf("%s on %s: %s", x.Collection, x.Key, strings.ToUpper(x.Status))
			if x.Detail != "" {
				line += " (" + x.Detail + ")"
			}
			fmt.Fprintf(w, "  %-22s %s\n", "sharding:", line)
		}
		for _, x := range r.Warnings {
			fmt.Fprintf(w, "  warning: %s\n", x)
		}
		if r.Error != "" {
			fmt.Fprintf(w, "  ERROR: %s\n", r.Error)
		}
	}
	return nil
}

func list(w io.Writer, title string, items []string) {
	if len(items) == 0 {
		fmt.Fprintf(w, "  %-22s none\n", title+":")
		return
	}
	fmt.Fprintf(w, "  %-22s %s\n", title+":", items[0])
	for _, it := range items[1:] {
		fmt.Fprintf(w, "  %-22s %s\n", "", it)
	}
}
