package testkit

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// ReadPaced reads r to its end, at about rate bytes per second when rate
// is positive (so that a transfer spans whatever the test does meanwhile,
// a restart say), and hands each chunk to check (nil: none), which names
// what it finds wrong itself. It returns the bytes read; an error from r
// says how far the transfer got.
func ReadPaced(r io.Reader, rate int64, check func([]byte) error) (int64, error) {
	buf := make([]byte, 256<<10)
	var n int64
	t0 := time.Now()
	for {
		m, err := io.ReadFull(r, buf)
		if m > 0 && check != nil {
			if cerr := check(buf[:m]); cerr != nil {
				return n, cerr
			}
		}
		n += int64(m)
		if rate > 0 {
			if ahead := time.Duration(n*int64(time.Second)/rate) - time.Since(t0); ahead > 0 {
				time.Sleep(ahead)
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return n, nil
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("after %d bytes: %w", n, err)
		}
	}
}

// Prober opens a new connection (whatever probe does) every 5 ms until
// Stop, and records when each was answered and why each failed: the gap a
// client sees across a restart is the longest interval without an answer.
type Prober struct {
	mu       sync.Mutex
	answered []time.Time
	failures []string
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// StartProber runs probe in a loop until Stop. A failure after Stop began
// does not count.
func StartProber(probe func(context.Context) error) *Prober {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Prober{cancel: cancel}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for ctx.Err() == nil {
			err := probe(ctx)
			p.mu.Lock()
			if err == nil {
				p.answered = append(p.answered, time.Now())
			} else if ctx.Err() == nil {
				p.failures = append(p.failures, err.Error())
			}
			p.mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return p
}

// LongestGap is the longest interval in [from, to] without an answer
// (counting from `from` and up to `to`), and where it began, after from.
func (p *Prober) LongestGap(from, to time.Time) (gap, at time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev := from
	for _, a := range p.answered {
		if a.Before(from) {
			continue
		}
		if a.After(to) {
			break
		}
		if a.Sub(prev) > gap {
			gap, at = a.Sub(prev), prev.Sub(from)
		}
		prev = a
	}
	if to.Sub(prev) > gap {
		gap, at = to.Sub(prev), prev.Sub(from)
	}
	return gap, at
}

// Stop ends the probing and returns the failures and the number of
// answers.
func (p *Prober) Stop() (failures []string, answered int) {
	p.cancel()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failures, len(p.answered)
}
