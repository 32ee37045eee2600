package daemon

import "sync"

// mailbox hands desired states from discovery to the daemon's loop, latest
// wins: put never waits for a busy daemon (an engine's events must not
// queue up behind a slow map update), and the daemon always applies the
// newest state. A drift check asked for by a replaced state is kept.
type mailbox struct {
	mu    sync.Mutex
	u     update
	full  bool
	ready chan struct{} // holds a token while full
}

func newMailbox() *mailbox { return &mailbox{ready: make(chan struct{}, 1)} }

func (m *mailbox) put(u update) {
	m.mu.Lock()
	if m.full {
		u.drift = u.drift || m.u.drift
		if u.ifaces == nil {
			u.ifaces = m.u.ifaces
		}
	}
	m.u, m.full = u, true
	m.mu.Unlock()
	select {
	case m.ready <- struct{}{}:
	default:
	}
}

// take returns the newest state, if one is waiting.
func (m *mailbox) take() (update, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.u, m.full
	m.u, m.full = update{}, false
	return u, ok
}
