package e2e

import "testing"

func TestParseCounters(t *testing.T) {
	body := `# HELP persister_entries_stored_total x
persister_entries_stored_total{collection="messages",outcome="inserted",tenant="acme"} 10
persister_entries_stored_total{collection="messages",outcome="inserted",tenant="globex"} 5
persister_entries_stored_total{collection="messages",outcome="duplicate",tenant="acme"} 3
persister_entries_stored_total{collection="dead_letters",outcome="inserted",tenant="acme"} 2
persister_entries_stored_total{collection="dead_letters",outcome="duplicate",tenant="acme"} 1
persister_entries_lost_total{cause="trimmed_before_stored",tenant="acme"} 4
persister_entries_lost_total{cause="trimmed_before_read",tenant="acme"} 6
persister_entries_lost_total{cause="something_else",tenant="acme"} 100
persister_entries_dead_lettered_total{reason="poison",tenant="acme"} 1
persister_entries_claimed_total{tenant="acme"} 7
persister_entries_acked_total{kind="topic",tenant="acme"} 20
persister_write_errors_total{class="unknown_outcome",tenant="acme"} 2
persister_write_errors_total{class="fatal",tenant="acme"} 8
persister_write_errors_total{class="retryable",tenant="acme"} 50
`
	c, err := ParseCounters(body)
	if err != nil {
		t.Fatal(err)
	}
	want := Counters{Inserted: 15, DLInserted: 2, Duplicate: 4, DeadLettered: 1, Lost: 4, LostUnread: 6, Claimed: 7, Acked: 20, Unknown: 2, Fatal: 8}
	if c != want {
		t.Errorf("parsed %+v, want %+v", c, want)
	}
	if got := c.Plus(c); got.Inserted != 30 || got.Fatal != 16 || got.LostUnread != 12 {
		t.Errorf("plus: %+v", got)
	}
}
