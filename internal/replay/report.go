package replay

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteText prints the replay report as a table, one row per stream, with
// at most limit refusals listed per stream (0: all).
func (r *Report) WriteText(w io.Writer, limit int) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "read\tnew\tpresent\trescued\trefused\t  stream\n")
	row := func(s StreamReport) {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t  %s\n", s.Read, s.Stored, s.Present, s.Rescued, s.Refused, s.Stream)
	}
	for _, s := range r.Streams {
		row(s)
	}
	row(r.Totals)
	if err := tw.Flush(); err != nil {
		return err
	}
	rate := 0.0
	if r.Seconds > 0 {
		rate = float64(r.Totals.Read) / r.Seconds
	}
	fmt.Fprintf(w, "range %s, %d streams, %.1fs, %.0f entries/s\n", r.Range, len(r.Streams), r.Seconds, rate)
	for _, s := range r.Streams {
		if s.Refused == 0 {
			continue
		}
		fmt.Fprintf(w, "\nrefused in %s (%d):\n", s.Stream, s.Refused)
		for i, x := range s.Refusals {
			if limit > 0 && i >= limit {
				fmt.Fprintf(w, "  ... %d more (--format json lists up to %d)\n", s.Refused-i, maxRefusals)
				break
			}
			fmt.Fprintf(w, "  %s: %s\n", x.ID, x.Reason)
		}
	}
	if r.TopicsSynced > 0 {
		fmt.Fprintf(w, "topics documents written or up to date for %d topic streams\n", r.TopicsSynced)
	}
	for _, x := range r.Warnings {
		fmt.Fprintf(w, "warning: %s\n", x)
	}
	writeUnconfigured(w, r.Unconfigured)
	if r.Error != "" {
		fmt.Fprintf(w, "\nSTOPPED EARLY: %s\n", r.Error)
	}
	return nil
}

// WriteText prints the verification report: a table of counts per stream,
// then the ids missing on either side (at most limit per list; 0: all).
func (v *VerifyReport) WriteText(w io.Writer, limit int) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "in redis\tmatched\tmissing in mongo\tonly in mongo\tundecodable\t  stream\n")
	for _, s := range v.Streams {
		only := fmt.Sprint(s.OnlyInMongoCount)
		if !s.OnlyInMongoChecked {
			only = "n/a"
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%d\t  %s\n", s.InRedis, s.Matched, len(s.MissingInMongo), only, len(s.Undecodable), s.Stream)
	}
	t := v.Totals
	fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t  total\n", t.InRedis, t.Matched, t.MissingInMongo, t.OnlyInMongo, t.Undecodable)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "range %s, %d streams, %.1fs\n", v.Range, len(v.Streams), v.Seconds)
	if t.StandIns > 0 {
		fmt.Fprintf(w, "%d matched entries are stored another way (the persister's own dead letters)\n", t.StandIns)
	}
	list := func(title string, ids []string, count int) {
		if count == 0 {
			return
		}
		fmt.Fprintf(w, "  %s (%d):", title, count)
		shown := ids
		if limit > 0 && len(shown) > limit {
			shown = shown[:limit]
		}
		fmt.Fprintf(w, " %s", strings.Join(shown, " "))
		if len(shown) < count {
			fmt.Fprintf(w, " ... %d more (--format json lists up to %d)", count-len(shown), MaxListed)
		}
		fmt.Fprintln(w)
	}
	for _, s := range v.Streams {
		if len(s.MissingInMongo)+s.OnlyInMongoCount+len(s.Undecodable) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s -> %s.%s, range %s\n", s.Stream, s.Tenant, s.Collection, s.Range)
		list("missing in MongoDB (run replay for this range)", s.MissingInMongo, len(s.MissingInMongo))
		list("only in MongoDB (trimmed or deleted from Redis)", s.OnlyInMongo, s.OnlyInMongoCount)
		for i, u := range s.Undecodable {
			if limit > 0 && i >= limit {
				fmt.Fprintf(w, "  ... %d more undecodable\n", len(s.Undecodable)-i)
				break
			}
			fmt.Fprintf(w, "  undecodable %s: %s\n", u.ID, u.Reason)
		}
	}
	writeUnconfigured(w, v.Unconfigured)
	if v.Complete() {
		fmt.Fprintln(w, "\nOK: every entry Redis holds in the range has its document.")
	} else {
		fmt.Fprintf(w, "\nINCOMPLETE: %d entries Redis holds have no document.\n", t.MissingInMongo)
	}
	return nil
}

func writeUnconfigured(w io.Writer, streams []string) {
	if len(streams) == 0 {
		return
	}
	fmt.Fprintf(w, "\nskipped %d streams of tenants that are not configured:\n", len(streams))
	for _, s := range streams {
		fmt.Fprintf(w, "  %s\n", s)
	}
}
