package dlq

import "sync"

// Memo remembers, for a bounded number of entries, the last reason each
// was left pending, so the poison dead letter can name it. It is the
// rescue.Notes of the daemon's Rescuer.
type Memo struct {
	mu    sync.Mutex
	max   int
	errs  map[string]string
	order []string
}

// NewMemo returns a Memo of at most max entries (oldest forgotten first).
func NewMemo(max int) *Memo {
	return &Memo{max: max, errs: map[string]string{}}
}

// Note records err as the last reason the entry id of stream was not stored.
func (m *Memo) Note(stream, id string, err error) {
	if m == nil || err == nil {
		return
	}
	k := stream + "\x00" + id
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.errs[k]; !ok {
		m.order = append(m.order, k)
		for len(m.order) > m.max {
			delete(m.errs, m.order[0])
			m.order = m.order[1:]
		}
	}
	m.errs[k] = err.Error()
}

// Last returns the last reason recorded for the entry.
func (m *Memo) Last(stream, id string) (string, bool) {
	if m == nil {
		return "", false
	}
	k := stream + "\x00" + id
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.errs[k]
	return s, ok
}
