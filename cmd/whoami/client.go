package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// clientConfig is one run of `whoami client`: n requests of one kind.
type clientConfig struct {
	url         string
	tcp         string
	udp         string
	n           int
	concurrency int
	timeout     time.Duration
	data        int64 // > 0: GET data?size=N (relative to url) and verify the bytes
	upload      int64 // > 0: POST sink with N bytes and verify the server's hash
	keepAlive   bool
	every       time.Duration // > 0: repeat the run at this period until stopped
}

// oneRequest sends request i and returns the name of the replica that answered.
type oneRequest func(ctx context.Context, i int) (string, error)

// tally is the outcome of a run.
type tally struct {
	byHost map[string]int
	errors map[string]int
	ok     int
	failed int
}

func cmdClient(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("whoami client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg clientConfig
	fs.StringVar(&cfg.url, "url", "http://127.0.0.1:8080/", "HTTP URL to GET (the default mode)")
	fs.StringVar(&cfg.tcp, "tcp", "", "HOST:PORT: connect, read the greeting, check one echoed line (instead of HTTP)")
	fs.StringVar(&cfg.udp, "udp", "", "HOST:PORT: send one datagram per request, each from a new socket (instead of HTTP)")
	fs.IntVar(&cfg.n, "n", 200, "number of requests")
	fs.IntVar(&cfg.concurrency, "concurrency", 20, "requests in flight at once")
	fs.DurationVar(&cfg.timeout, "timeout", 5*time.Second, "deadline of each request (UDP resends twice within it)")
	fs.Int64Var(&cfg.data, "data", 0, "N: GET data?size=N, resolved against --url, and verify the bytes ("+dataGenerator+")")
	fs.Int64Var(&cfg.upload, "upload", 0, "N: POST N bytes of the data stream to sink, resolved against --url, and verify the returned hash")
	fs.BoolVar(&cfg.keepAlive, "keepalive", false, "reuse HTTP connections (off by default: each request is a new flow, so it can land on another replica)")
	fs.DurationVar(&cfg.every, "every", 0, "repeat the whole run at this period until stopped, printing each round (for watching a demo)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "whoami client: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	target, req, err := cfg.request()
	if err != nil {
		fmt.Fprintf(stderr, "whoami client: %v\n", err)
		return 2
	}
	if cfg.every <= 0 {
		fmt.Fprintf(stdout, "%d requests to %s, %d at a time\n", cfg.n, target, min(cfg.n, cfg.concurrency))
		t := runRequests(ctx, cfg.n, cfg.concurrency, req)
		t.print(stdout)
		if t.failed > 0 {
			return 1
		}
		return 0
	}
	// Repeat mode never exits on failures: they are what a demo wants to
	// show (a replica stopped, a backend scaled in), round after round.
	tick := time.NewTicker(cfg.every)
	defer tick.Stop()
	for round := 1; ; round++ {
		fmt.Fprintf(stdout, "round %d at %s: %d requests to %s, %d at a time\n",
			round, time.Now().Format(time.TimeOnly), cfg.n, target, min(cfg.n, cfg.concurrency))
		t := runRequests(ctx, cfg.n, cfg.concurrency, req)
		if ctx.Err() != nil {
			return 0
		}
		t.print(stdout)
		select {
		case <-ctx.Done():
			return 0
		case <-tick.C:
		}
	}
}

// request picks the kind of request from the flags and describes its target.
func (cfg clientConfig) request() (string, oneRequest, error) {
	if cfg.n < 0 || cfg.concurrency < 1 || cfg.timeout <= 0 {
		return "", nil, errors.New("--n must be >= 0, --concurrency >= 1 and --timeout > 0")
	}
	if cfg.tcp != "" && cfg.udp != "" {
		return "", nil, errors.New("--tcp and --udp are exclusive")
	}
	if (cfg.tcp != "" || cfg.udp != "") && (cfg.data > 0 || cfg.upload > 0) {
		return "", nil, errors.New("--data and --upload are HTTP modes")
	}
	if cfg.data > 0 && cfg.upload > 0 {
		return "", nil, errors.New("--data and --upload are exclusive")
	}
	switch {
	case cfg.tcp != "":
		return "tcp " + cfg.tcp, tcpRequest(cfg.tcp, cfg.timeout), nil
	case cfg.udp != "":
		return "udp " + cfg.udp, udpRequest(cfg.udp, cfg.timeout), nil
	}
	base, err := url.Parse(cfg.url)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return "", nil, fmt.Errorf("--url %q: want http://HOST[:PORT]/PATH", cfg.url)
	}
	tr := &http.Transport{
		DisableKeepAlives:   !cfg.keepAlive,
		MaxIdleConnsPerHost: cfg.concurrency,
		DialContext:         (&net.Dialer{Timeout: cfg.timeout}).DialContext,
	}
	hc := &http.Client{Transport: tr, Timeout: cfg.timeout}
	switch {
	case cfg.data > 0:
		u := base.ResolveReference(&url.URL{Path: "data", RawQuery: "size=" + strconv.FormatInt(cfg.data, 10)})
		return "GET " + u.String(), httpDataRequest(hc, u.String(), cfg.data), nil
	case cfg.upload > 0:
		u := base.ResolveReference(&url.URL{Path: "sink"})
		return "POST " + u.String(), httpUploadRequest(hc, u.String(), cfg.upload), nil
	}
	return "GET " + base.String(), httpGetRequest(hc, base.String()), nil
}

// runRequests sends n requests with at most concurrency in flight.
func runRequests(ctx context.Context, n, concurrency int, req oneRequest) tally {
	t := tally{byHost: map[string]int{}, errors: map[string]int{}}
	var (
		next int64 = -1
		mu   sync.Mutex
		wg   sync.WaitGroup
	)
	for w := 0; w < concurrency && w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(atomic.AddInt64(&next, 1))
				if i >= n {
					return
				}
				host, err := req(ctx, i)
				mu.Lock()
				if err != nil {
					t.failed++
					t.errors[err.Error()]++
				} else {
					t.ok++
					t.byHost[host]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return t
}

// print writes the per-replica table, the distinct errors, and last the
// summary line "requests N ok M failed F" that scripts grep for.
func (t tally) print(w io.Writer) {
	hosts := make([]string, 0, len(t.byHost))
	for h := range t.byHost {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOSTNAME\tREPLIES\tSHARE")
	total := t.ok + t.failed
	for _, h := range hosts {
		fmt.Fprintf(tw, "%s\t%d\t%.1f%%\n", h, t.byHost[h], 100*float64(t.byHost[h])/float64(total))
	}
	tw.Flush()
	if len(t.errors) > 0 {
		msgs := make([]string, 0, len(t.errors))
		for m := range t.errors {
			msgs = append(msgs, m)
		}
		sort.Slice(msgs, func(i, j int) bool { return t.errors[msgs[i]] > t.errors[msgs[j]] })
		fmt.Fprintln(w, "errors:")
		for i, m := range msgs {
			if i == 5 {
				fmt.Fprintf(w, "  ... and %d more distinct errors\n", len(msgs)-5)
				break
			}
			fmt.Fprintf(w, "  %d x %s\n", t.errors[m], m)
		}
	}
	fmt.Fprintf(w, "requests %d ok %d failed %d\n", total, t.ok, t.failed)
}

func httpGetRequest(hc *http.Client, target string) oneRequest {
	return func(ctx context.Context, _ int) (string, error) {
		resp, err := httpDo(ctx, hc, http.MethodGet, target, nil, 0)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return "", fmt.Errorf("reading body: %w", err)
		}
		// The body names the replica too; prefer it for GET / because it is
		// what a human reading curl output sees.
		if name, ok := strings.CutPrefix(string(body), "hostname "); ok {
			name, _, _ = strings.Cut(name, "\n")
			return name, nil
		}
		return replicaOf(resp)
	}
}

func httpDataRequest(hc *http.Client, target string, size int64) oneRequest {
	return func(ctx context.Context, _ int) (string, error) {
		resp, err := httpDo(ctx, hc, http.MethodGet, target, nil, 0)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		if err := verifyData(resp.Body, size); err != nil {
			return "", err
		}
		return replicaOf(resp)
	}
}

func httpUploadRequest(hc *http.Client, target string, size int64) oneRequest {
	h := sha256.New()
	_, _ = io.Copy(h, newDataReader(size))
	want := fmt.Sprintf("bytes %d\nsha256 %x\n", size, h.Sum(nil))
	return func(ctx context.Context, _ int) (string, error) {
		resp, err := httpDo(ctx, hc, http.MethodPost, target, newDataReader(size), size)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if err != nil {
			return "", fmt.Errorf("reading body: %w", err)
		}
		if string(body) != want {
			return "", fmt.Errorf("sink answered %q, want %q", body, want)
		}
		return replicaOf(resp)
	}
}

// httpDo sends one request and insists on 200.
func httpDo(ctx context.Context, hc *http.Client, method, target string, body io.Reader, size int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = size
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: %s", method, target, resp.Status)
	}
	return resp, nil
}

func replicaOf(resp *http.Response) (string, error) {
	if h := resp.Header.Get(hostnameHeader); h != "" {
		return h, nil
	}
	return "", fmt.Errorf("answer without %s header: not a whoami server?", hostnameHeader)
}

func tcpRequest(addr string, timeout time.Duration) oneRequest {
	return func(ctx context.Context, i int) (string, error) {
		d := net.Dialer{Timeout: timeout}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		r := bufio.NewReader(c)
		greeting, err := r.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("reading greeting: %w", err)
		}
		name, ok := strings.CutPrefix(strings.TrimSuffix(greeting, "\n"), "hostname ")
		if !ok {
			return "", fmt.Errorf("unexpected greeting %q", greeting)
		}
		line := fmt.Sprintf("ping %d\n", i)
		if _, err := io.WriteString(c, line); err != nil {
			return "", fmt.Errorf("writing: %w", err)
		}
		echo, err := r.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("reading echo: %w", err)
		}
		if echo != line {
			return "", fmt.Errorf("echo %q, want %q", echo, line)
		}
		return name, nil
	}
}

// udpRequest uses a new socket per request: the balancer keys UDP flows on
// the 5-tuple, so one socket would always reach the same replica. A lost
// datagram is resent on the same socket (same flow) up to twice.
func udpRequest(addr string, timeout time.Duration) oneRequest {
	const attempts = 3
	return func(ctx context.Context, i int) (string, error) {
		d := net.Dialer{Timeout: timeout}
		c, err := d.DialContext(ctx, "udp", addr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		payload := fmt.Sprintf("ping %d", i)
		buf := make([]byte, 64<<10)
		var lastErr error
		for a := 0; a < attempts; a++ {
			if _, err := io.WriteString(c, payload); err != nil {
				return "", fmt.Errorf("sending: %w", err)
			}
			_ = c.SetReadDeadline(time.Now().Add(timeout / attempts))
			n, err := c.Read(buf)
			if err != nil {
				lastErr = err
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				return "", err
			}
			rest, ok := strings.CutPrefix(string(buf[:n]), "hostname ")
			name, echoed, ok2 := strings.Cut(rest, " ")
			if !ok || !ok2 || echoed != payload {
				return "", fmt.Errorf("unexpected reply %q to %q", buf[:n], payload)
			}
			return name, nil
		}
		return "", fmt.Errorf("no reply after %d attempts: %w", attempts, lastErr)
	}
}
