package e2e

import (
	"strings"

	"github.com/chronow/persister/internal/promtext"
)

// Counters are the daemon's counters the fault rows and the chaos soak
// reconcile with what is stored, each summed over its labels.
type Counters struct {
	Inserted     float64 `json:"inserted"`      // persister_entries_stored_total{collection="messages",outcome="inserted"}
	DLInserted   float64 `json:"dl_inserted"`   // persister_entries_stored_total{collection="dead_letters",outcome="inserted"}
	Duplicate    float64 `json:"duplicate"`     // persister_entries_stored_total{outcome="duplicate"}
	DeadLettered float64 `json:"dead_lettered"` // persister_entries_dead_lettered_total
	Lost         float64 `json:"lost"`          // persister_entries_lost_total{cause="trimmed_before_stored"}
	LostUnread   float64 `json:"lost_unread"`   // persister_entries_lost_total{cause="trimmed_before_read"}
	Claimed      float64 `json:"claimed"`       // persister_entries_claimed_total
	Acked        float64 `json:"acked"`         // persister_entries_acked_total
	Unknown      float64 `json:"unknown_outcome"`
	Fatal        float64 `json:"fatal"` // persister_write_errors_total{class="fatal"}
}

// Plus adds two Counters field by field.
func (c Counters) Plus(o Counters) Counters {
	return Counters{
		Inserted: c.Inserted + o.Inserted, DLInserted: c.DLInserted + o.DLInserted, Duplicate: c.Duplicate + o.Duplicate,
		DeadLettered: c.DeadLettered + o.DeadLettered, Lost: c.Lost + o.Lost, LostUnread: c.LostUnread + o.LostUnread,
		Claimed: c.Claimed + o.Claimed, Acked: c.Acked + o.Acked, Unknown: c.Unknown + o.Unknown, Fatal: c.Fatal + o.Fatal,
	}
}

// ParseCounters sums the families of Counters in a /metrics body: each
// sample goes to the first rule whose family it is of and whose label it
// has.
func ParseCounters(body string) (Counters, error) {
	var c Counters
	rules := []struct {
		family, label string
		to            *float64
	}{
		{"persister_entries_stored_total", `outcome="duplicate"`, &c.Duplicate},
		{"persister_entries_stored_total", `collection="dead_letters"`, &c.DLInserted},
		{"persister_entries_stored_total", `collection="messages"`, &c.Inserted},
		{"persister_entries_dead_lettered_total", "", &c.DeadLettered},
		{"persister_entries_lost_total", `cause="trimmed_before_stored"`, &c.Lost},
		{"persister_entries_lost_total", `cause="trimmed_before_read"`, &c.LostUnread},
		{"persister_entries_claimed_total", "", &c.Claimed},
		{"persister_entries_acked_total", "", &c.Acked},
		{"persister_write_errors_total", `class="unknown_outcome"`, &c.Unknown},
		{"persister_write_errors_total", `class="fatal"`, &c.Fatal},
	}
	err := promtext.Each(body, func(name string, v float64) {
		family, labels, _ := strings.Cut(name, "{")
		for _, r := range rules {
			if r.family == family && strings.Contains(labels, r.label) {
				*r.to += v
				return
			}
		}
	})
	return c, err
}
