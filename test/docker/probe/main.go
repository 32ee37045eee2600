// Command probe is the traffic generator of the Docker tests (test/docker).
// It runs in a client container and prints one line per event with
// wall-clock timestamps, so a test can tell exactly when a replica started or
// stopped getting new flows. `whoami client` only prints totals.
//
// Load mode: workers each open a new connection per request (HTTP GET with
// keep-alives off), so every request is a new flow the balancer places:
//
//	probe -url=http://VIP/ -workers=4 -every=20ms [-timeout=3s] [-max=2m] [-until-eof]
//	R <start unix ns> <duration ns> <replica> OK <remote address the replica saw>
//	R <start unix ns> <duration ns> - ERR <error>
//
// Session mode: hold n TCP echo sessions open, and on every line read from
// stdin send one line on each and report whether its echo came back:
//
//	probe -tcp=VIP:9000 -sessions=24 [-timeout=2s]
//	S <i> <replica>            once per session, then "HELD"
//	P <i> OK | P <i> ERR <error>   per session per stdin line, then "PINGED"
//
// Both modes end on stdin EOF when told to (-until-eof, always in session
// mode) or after -max, and print "END ok=N failed=M" last.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type out struct {
	mu sync.Mutex
	w  *bufio.Writer
}

// line writes and flushes one line: the test reads them as they come.
func (o *out) line(format string, a ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	fmt.Fprintf(o.w, format+"\n", a...)
	_ = o.w.Flush()
}

func main() {
	url := flag.String("url", "", "HTTP URL to GET, one new connection per request (load mode)")
	workers := flag.Int("workers", 1, "concurrent request loops (load mode)")
	every := flag.Duration("every", 20*time.Millisecond, "pause of each worker between its requests (load mode)")
	tcpAddr := flag.String("tcp", "", "HOST:PORT of a whoami TCP greet+echo port (session mode)")
	sessions := flag.Int("sessions", 0, "TCP sessions to hold open (session mode)")
	timeout := flag.Duration("timeout", 3*time.Second, "deadline of one request, connect included")
	maxRun := flag.Duration("max", 2*time.Minute, "stop after this long whatever happens")
	untilEOF := flag.Bool("until-eof", false, "stop when stdin reaches EOF (docker exec -i, then close stdin)")
	flag.Parse()

	o := &out{w: bufio.NewWriter(os.Stdout)}
	ctx, cancel := context.WithTimeout(context.Background(), *maxRun)
	defer cancel()

	var ok, failed int64
	switch {
	case *tcpAddr != "" && *sessions > 0:
		ok, failed = holdSessions(ctx, o, *tcpAddr, *sessions, *timeout)
	case *url != "":
		if *untilEOF {
			go func() {
				_, _ = io.Copy(io.Discard, os.Stdin)
				cancel()
			}()
		}
		ok, failed = load(ctx, o, *url, *workers, *every, *timeout)
	default:
		fmt.Fprintln(os.Stderr, "probe: want -url (load mode) or -tcp with -sessions (session mode)")
		os.Exit(2)
	}
	o.line("END ok=%d failed=%d", ok, failed)
}

func load(ctx context.Context, o *out, url string, workers int, every, timeout time.Duration) (int64, int64) {
	hc := &http.Client{
		Timeout: timeout,
		// A new connection per request: each one is a new flow to place.
		Transport: &http.Transport{DisableKeepAlives: true, DialContext: (&net.Dialer{Timeout: timeout}).DialContext},
	}
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				start := time.Now()
				host, remote, err := get(hc, url)
				d := time.Since(start)
				if err != nil {
					// A request cut short by our own shutdown is no verdict.
					if ctx.Err() != nil {
						return
					}
					failed.Add(1)
					o.line("R %d %d - ERR %s", start.UnixNano(), d.Nanoseconds(), oneLine(err.Error()))
				} else {
					ok.Add(1)
					o.line("R %d %d %s OK %s", start.UnixNano(), d.Nanoseconds(), host, remote)
				}
				select {
				case <-ctx.Done():
				case <-time.After(every):
				}
			}
		}()
	}
	wg.Wait()
	return ok.Load(), failed.Load()
}

// get fetches url (not bound to ctx: a request in flight when the test
// stops the probe finishes or times out on its own) and returns the replica
// named by whoami's body and the client address it saw ("remote").
func get(hc *http.Client, url string) (host, remote string, err error) {
	resp, err := hc.Get(url)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", "", fmt.Errorf("reading body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("status %s", resp.Status)
	}
	remote = "-"
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, "hostname "); ok {
			host = v
		}
		if v, ok := strings.CutPrefix(l, "remote "); ok {
			remote = v
		}
	}
	if host == "" {
		return "", "", fmt.Errorf("unexpected body %q", body)
	}
	return host, remote, nil
}

func holdSessions(ctx context.Context, o *out, addr string, n int, timeout time.Duration) (int64, int64) {
	type session struct {
		c net.Conn
		r *bufio.Reader
	}
	var ok, failed int64
	ss := make([]*session, n)
	for i := range ss {
		d := net.Dialer{Timeout: timeout}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			o.line("S %d - ERR %s", i, oneLine(err.Error()))
			failed++
			continue
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(timeout))
		r := bufio.NewReader(c)
		greeting, err := r.ReadString('\n')
		name, found := strings.CutPrefix(strings.TrimSpace(greeting), "hostname ")
		if err != nil || !found {
			o.line("S %d - ERR greeting %q: %v", i, greeting, err)
			failed++
			continue
		}
		ss[i] = &session{c, r}
		o.line("S %d %s", i, name)
	}
	o.line("HELD")

	lines := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- struct{}{}
		}
		close(lines)
	}()
	for round := 0; ; round++ {
		select {
		case <-ctx.Done():
			return ok, failed
		case _, more := <-lines:
			if !more {
				return ok, failed
			}
		}
		var wg sync.WaitGroup
		for i, s := range ss {
			if s == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				msg := fmt.Sprintf("ping %d %d\n", i, round)
				_ = s.c.SetDeadline(time.Now().Add(timeout))
				_, err := io.WriteString(s.c, msg)
				var echo string
				if err == nil {
					echo, err = s.r.ReadString('\n')
				}
				if err == nil && echo != msg {
					err = fmt.Errorf("echo %q, want %q", echo, msg)
				}
				if err != nil {
					atomic.AddInt64(&failed, 1)
					o.line("P %d ERR %s", i, oneLine(err.Error()))
					return
				}
				atomic.AddInt64(&ok, 1)
				o.line("P %d OK", i)
			}()
		}
		wg.Wait()
		o.line("PINGED")
	}
}

func oneLine(s string) string {
	if s == "" {
		return "(empty error)"
	}
	return strings.ReplaceAll(s, "\n", " ")
}
