// Package docker_test runs xdplb's Docker discovery end to end against the
// real engine: an xdplb container (NET_ADMIN + SYS_ADMIN, the engine socket
// read-only, not privileged) finds its own networks, serves the labelled
// whoami containers on its own address, and client containers send real
// requests to that address. Every test owns its network and containers
// (dockerharness names them xdplbtest-<random>- and removes them).
//
// The binaries come from `make build` (bin/xdplb; XDPLB_BIN_DIR overrides
// the directory); whoami and the probe client are built here.
package docker_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdplb/xdplb/test/dockerharness"
	"github.com/xdplb/xdplb/test/testkit"
)

// The service every test balances: HTTP on the VIP's port 80 to the
// replicas' 8080, plus whoami's TCP echo port.
const (
	service     = "web"
	listenSpec  = "80:8080/tcp,9000/tcp"
	metricsPort = "9180"
)

// env is one test's world: a user network with the load balancer and a
// client container on it, and helpers to add backends and send traffic.
type env struct {
	t      *testing.T
	h      *dockerharness.H
	net    string
	whoami string // backend image (1 s HEALTHCHECK)
	xdplb  string // load balancer image
	client string // client container: whoami + probe, unlabelled

	lb   string // load balancer container, once started
	lbIP string
	logs *follower

	runArgs []string // docker run flags of every container of the env
}

// newEnv builds the images, the network and the client; startLB starts
// the balancer (tests add some backends first, some after).
func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t)
}

// newEnvWith is newEnv with extra docker run flags for every container it
// starts (e.g. --restart=always).
func newEnvWith(t *testing.T, runArgs ...string) *env {
	t.Helper()
	h := dockerharness.New(t)
	e := &env{t: t, h: h, runArgs: runArgs}
	bin := xdplbBinary(t)
	e.xdplb = h.XdplbImage(bin)
	e.whoami = h.WhoamiImage()
	clientImg := h.Image("client", `FROM scratch
COPY whoami /whoami
COPY probe /probe
ENTRYPOINT ["/whoami"]
CMD ["serve"]
`, map[string]string{
		"whoami": dockerharness.GoBuildStatic(t, "./cmd/whoami", t.TempDir()),
		"probe":  dockerharness.GoBuildStatic(t, "./test/docker/probe", t.TempDir()),
	})
	e.net = h.Network("n")
	// The client serves too (it needs a long-running command), but carries
	// no label: it must never get traffic from the balancer.
	e.client = h.Name("client")
	h.Run("client", e.args("--network", e.net, "--hostname", e.client, clientImg)...)
	return e
}

// xdplbBinary is the static binary `make build` made.
func xdplbBinary(t *testing.T) string {
	dir := os.Getenv("XDPLB_BIN_DIR")
	if dir == "" {
		dir = filepath.Join(dockerharness.ModuleRoot(t), "bin")
	}
	bin := filepath.Join(dir, "xdplb")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s missing: run `make build` first (or set XDPLB_BIN_DIR): %v", bin, err)
	}
	return bin
}

// startLB runs xdplb in Docker mode on the env's network and waits until
// /healthz says it is attached and synced. extra are `xdplb run` flags.
func (e *env) startLB(extra ...string) {
	e.t.Helper()
	args := e.args(append(e.h.XdplbRunArgs(), "--network", e.net, e.xdplb, "run", "--discovery=docker")...)
	e.lb = e.h.Name("lb")
	e.h.Run("lb", append(args, extra...)...)
	e.lbIP = e.h.IP(e.lb, e.net)
	e.logs = follow(e.t, e.lb)
	e.t.Cleanup(func() {
		if e.t.Failed() {
			e.t.Logf("load balancer log:\n%s", e.logs.text())
		}
	})
	e.waitLBHealthy(30 * time.Second)
}

// waitLBHealthy waits until the balancer answers 200 on /healthz. It looks
// every 20 ms: the restart tests report when that happened.
func (e *env) waitLBHealthy(timeout time.Duration) {
	e.t.Helper()
	var code int
	var err error
	if !testkit.EventuallyEvery(timeout, 20*time.Millisecond, func() bool {
		code, _, err = e.lbHTTP("/healthz")
		return err == nil && code == http.StatusOK
	}) {
		e.t.Fatalf("load balancer not healthy after %s (last: %d %v); log:\n%s", timeout, code, err, e.lbLogs())
	}
}

// lbHTTP fetches a path of the balancer's own HTTP server (metrics,
// healthz) from the host, which reaches every bridge network.
func (e *env) lbHTTP(path string) (int, string, error) {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + e.lbIP + ":" + metricsPort + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// backendArgs are the docker run flags of a labelled replica of service.
func backendArgs(extra ...string) []string {
	return append([]string{
		"--label", "xdplb.enable=true",
		"--label", "xdplb.service=" + service,
		"--label", "xdplb.listen=" + listenSpec,
	}, extra...)
}

// backend starts a labelled whoami replica on the env's network, named
// (and answering as) PREFIX+name. extra go before the image (more labels,
// --no-healthcheck...). It returns the full name.
func (e *env) backend(name string, extra ...string) string {
	e.t.Helper()
	full := e.h.Name(name)
	args := append([]string{"--network", e.net, "--hostname", full}, backendArgs(extra...)...)
	e.h.Run(name, e.args(append(args, e.whoami)...)...)
	return full
}

// plain starts a whoami container on the network with the given labels only.
func (e *env) plain(name string, labels ...string) string {
	e.t.Helper()
	full := e.h.Name(name)
	args := []string{"--network", e.net, "--hostname", full}
	for _, l := range labels {
		args = append(args, "--label", l)
	}
	e.h.Run(name, e.args(append(args, e.whoami)...)...)
	return full
}

// args prepends the env's own docker run flags.
func (e *env) args(a ...string) []string {
	return append(append([]string{}, e.runArgs...), a...)
}

// url is the service's HTTP address as clients see it.
func (e *env) url() string { return "http://" + e.lbIP + ":80/" }

// docker runs the docker CLI and returns stdout and stderr together with
// the error, without failing the test (a client that saw failures exits 1,
// and its output is what the test wants).
func docker(args ...string) (string, error) {
	cmd := exec.Command("docker", args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// clientResult is one `whoami client` run.
type clientResult struct {
	byHost     map[string]int
	ok, failed int
	output     string
}

var summaryRe = regexp.MustCompile(`(?m)^requests \d+ ok (\d+) failed (\d+)$`)

// whoamiClient runs `whoami client` in the client container against url.
func (e *env) whoamiClient(url string, n, concurrency int) clientResult {
	e.t.Helper()
	out, err := docker("exec", e.client, "/whoami", "client", "--url="+url,
		"--n="+strconv.Itoa(n), "--concurrency="+strconv.Itoa(concurrency), "--timeout=3s")
	r := clientResult{byHost: map[string]int{}, output: out}
	m := summaryRe.FindStringSubmatch(out)
	if m == nil {
		e.t.Fatalf("whoami client: no summary line (%v):\n%s", err, out)
	}
	r.ok, _ = strconv.Atoi(m[1])
	r.failed, _ = strconv.Atoi(m[2])
	inTable := false
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) == 3 && f[0] == "HOSTNAME":
			inTable = true
		case inTable && len(f) == 3 && strings.HasSuffix(f[2], "%"):
			c, err := strconv.Atoi(f[1])
			if err != nil {
				e.t.Fatalf("whoami client: bad table line %q", l)
			}
			r.byHost[f[0]] = c
		default:
			inTable = false
		}
	}
	return r
}

// waitServing sends rounds of requests until every one of names has
// answered through the balancer, and fails the test after timeout.
func (e *env) waitServing(timeout time.Duration, names ...string) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	var last clientResult
	for {
		last = e.whoamiClient(e.url(), 60, 6)
		missing := 0
		for _, n := range names {
			if last.byHost[n] == 0 {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("after %s, not every one of %v answers through the balancer; last round:\n%s", timeout, names, last.output)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitHealthy waits for each container's HEALTHCHECK to pass.
func (e *env) waitHealthy(names ...string) {
	e.t.Helper()
	for _, n := range names {
		e.h.WaitHealth(n, "healthy", 30*time.Second)
	}
}

// newFlows reads xdplb_backend_new_flows_total per backend name, summed over
// the service's ports. A backend the balancer does not know is absent.
func (e *env) newFlows() map[string]uint64 {
	e.t.Helper()
	code, body, err := e.lbHTTP("/metrics")
	if err != nil || code != http.StatusOK {
		e.t.Fatalf("GET /metrics: %d %v", code, err)
	}
	return parseNewFlows(e.t, body)
}

var metricRe = regexp.MustCompile(`^xdplb_backend_new_flows_total\{(.*)\} (\d+)$`)
var labelRe = regexp.MustCompile(`(\w+)="((?:[^"\\]|\\.)*)"`)

func parseNewFlows(t *testing.T, body string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, l := range strings.Split(body, "\n") {
		m := metricRe.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		labels := map[string]string{}
		for _, lm := range labelRe.FindAllStringSubmatch(m[1], -1) {
			labels[lm[1]] = lm[2]
		}
		v, err := strconv.ParseUint(m[2], 10, 64)
		if err != nil || labels["backend"] == "" {
			t.Fatalf("bad metric line %q", l)
		}
		out[labels["backend"]] += v
	}
	return out
}

// ---- the load balancer's log, followed as it is written ----

// logLine is one line of the balancer's output, with when the test saw it.
type logLine struct {
	at   time.Time
	text string
	kv   map[string]string
}

// follower collects a container's log (docker logs -f) line by line.
type follower struct {
	mu    sync.Mutex
	lines []logLine
	cmd   *exec.Cmd
	done  chan struct{}
}

func follow(t *testing.T, ctr string) *follower {
	f := &follower{done: make(chan struct{})}
	f.cmd = exec.Command("docker", "logs", "-f", ctr)
	pr, pw := io.Pipe()
	f.cmd.Stdout, f.cmd.Stderr = pw, pw
	if err := f.cmd.Start(); err != nil {
		t.Fatalf("docker logs -f %s: %v", ctr, err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l := logLine{at: time.Now(), text: sc.Text(), kv: testkit.ParseLogfmt(sc.Text())}
			f.mu.Lock()
			f.lines = append(f.lines, l)
			f.mu.Unlock()
		}
		close(f.done)
	}()
	go func() {
		_ = f.cmd.Wait()
		pw.Close()
	}()
	t.Cleanup(func() {
		_ = f.cmd.Process.Kill()
		select {
		case <-f.done:
		case <-time.After(5 * time.Second):
		}
	})
	return f
}

func (f *follower) snapshot() []logLine {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]logLine(nil), f.lines...)
}

func (f *follower) text() string {
	var b strings.Builder
	for _, l := range f.snapshot() {
		b.WriteString(l.text)
		b.WriteByte('\n')
	}
	return b.String()
}

// mark is a position in the log: waitFor only looks at later lines.
func (f *follower) mark() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.lines)
}

// waitFor returns the first line after mark for which match is true, or
// fails the test after timeout.
func (f *follower) waitFor(t *testing.T, mark int, what string, timeout time.Duration, match func(logLine) bool) logLine {
	t.Helper()
	if l, ok := f.poll(mark, timeout, match); ok {
		return l
	}
	t.Fatalf("load balancer did not log %s within %s", what, timeout)
	return logLine{}
}

func (f *follower) poll(mark int, timeout time.Duration, match func(logLine) bool) (logLine, bool) {
	var found logLine
	ok := testkit.EventuallyEvery(timeout, 20*time.Millisecond, func() bool {
		lines := f.snapshot()
		for _, l := range lines[min(mark, len(lines)):] {
			if match(l) {
				found = l
				return true
			}
		}
		return false
	})
	return found, ok
}

// backendEvent matches the reconciler's line msg about backend name.
func backendEvent(msg, name string) func(logLine) bool {
	return func(l logLine) bool { return l.kv["msg"] == msg && l.kv["backend"] == name }
}

// ---- the probe: timestamped new-connection load from the client ----

// rec is one request of the probe.
type rec struct {
	start  time.Time
	dur    time.Duration
	host   string // "" when it failed
	remote string // the client address the replica saw
	err    string
}

// probe is a running `probe` in the client container.
type probe struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	recs  []rec
	other []string // session-mode and END lines
	done  chan struct{}
}

// startProbe starts the probe in the client container; it runs until stop
// (or its own -max). args are probe flags.
func (e *env) startProbe(args ...string) *probe {
	e.t.Helper()
	p := &probe{done: make(chan struct{})}
	p.cmd = exec.Command("docker", append([]string{"exec", "-i", e.client, "/probe", "-max=3m"}, args...)...)
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		e.t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	p.cmd.Stderr = os.Stderr
	if err := p.cmd.Start(); err != nil {
		e.t.Fatalf("starting the probe: %v", err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.add(e.t, sc.Text())
		}
		_ = p.cmd.Wait()
	}()
	e.t.Cleanup(func() { p.stop(e.t) })
	return p
}

func (p *probe) add(t *testing.T, line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := strings.SplitN(line, " ", 5)
	if len(f) >= 5 && f[0] == "R" {
		ns, err1 := strconv.ParseInt(f[1], 10, 64)
		d, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 == nil && err2 == nil {
			r := rec{start: time.Unix(0, ns), dur: time.Duration(d)}
			if rest, ok := strings.CutPrefix(f[4], "OK"); ok {
				r.host = f[3]
				r.remote = strings.TrimSpace(rest)
			} else {
				r.err = strings.TrimPrefix(f[4], "ERR ")
			}
			p.recs = append(p.recs, r)
			return
		}
	}
	p.other = append(p.other, line)
}

func (p *probe) snapshot() []rec {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]rec(nil), p.recs...)
}

func (p *probe) otherLines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.other...)
}

// waitFor polls the records until match is true or fails after timeout.
func (p *probe) waitFor(t *testing.T, what string, timeout time.Duration, match func([]rec) bool) {
	t.Helper()
	if !testkit.EventuallyEvery(timeout, 10*time.Millisecond, func() bool { return match(p.snapshot()) }) {
		t.Fatalf("probe: %s not seen within %s (%s)", what, timeout, summarize(p.snapshot()))
	}
}

// stop closes the probe's stdin (it ends its run) and waits for it.
func (p *probe) stop(t *testing.T) []rec {
	_ = p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("probe did not stop within 15s of its stdin closing")
	}
	return p.snapshot()
}

// end is the probe's END line, once it stopped.
func (p *probe) end() string {
	for _, l := range p.otherLines() {
		if strings.HasPrefix(l, "END ") {
			return l
		}
	}
	return ""
}

// summarize counts records per replica and failures, for messages.
func summarize(rs []rec) string {
	by := map[string]int{}
	failed := 0
	errs := map[string]int{}
	for _, r := range rs {
		if r.host == "" {
			failed++
			errs[r.err]++
		} else {
			by[r.host]++
		}
	}
	var hosts []string
	for h := range by {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	var b strings.Builder
	fmt.Fprintf(&b, "%d requests, %d failed;", len(rs), failed)
	for _, h := range hosts {
		fmt.Fprintf(&b, " %s=%d", h, by[h])
	}
	for e, n := range errs {
		fmt.Fprintf(&b, "; %dx %s", n, e)
	}
	return b.String()
}

// between returns the records whose request started in [from, to).
func between(rs []rec, from, to time.Time) []rec {
	var out []rec
	for _, r := range rs {
		if !r.start.Before(from) && r.start.Before(to) {
			out = append(out, r)
		}
	}
	return out
}

func failures(rs []rec) []rec {
	var out []rec
	for _, r := range rs {
		if r.host == "" {
			out = append(out, r)
		}
	}
	return out
}

func count(rs []rec, host string) int {
	n := 0
	for _, r := range rs {
		if r.host == host {
			n++
		}
	}
	return n
}

// waitForLine waits for a non-request line of the probe.
func (p *probe) waitForLine(t *testing.T, line string, timeout time.Duration) {
	t.Helper()
	if !testkit.EventuallyEvery(timeout, 10*time.Millisecond, func() bool { return slices.Contains(p.otherLines(), line) }) {
		t.Fatalf("probe did not print %q within %s: %v", line, timeout, p.otherLines())
	}
}

// pingResult is one round of echoes over the held sessions.
type pingResult struct {
	ok     int
	failed map[string]string // session index -> error
}

// ping makes a session-mode probe send one line on every held session and
// collects the outcome.
func (p *probe) ping(t *testing.T) pingResult {
	t.Helper()
	from := len(p.otherLines())
	rounds := func(ls []string) int {
		n := 0
		for _, l := range ls {
			if l == "PINGED" {
				n++
			}
		}
		return n
	}
	want := rounds(p.otherLines()) + 1
	if _, err := io.WriteString(p.stdin, "ping\n"); err != nil {
		t.Fatalf("probe stdin: %v", err)
	}
	if !testkit.EventuallyEvery(15*time.Second, 10*time.Millisecond, func() bool { return rounds(p.otherLines()) >= want }) {
		t.Fatalf("probe: no PINGED within 15s: %v", p.otherLines()[from:])
	}
	res := pingResult{failed: map[string]string{}}
	for _, l := range p.otherLines()[from:] {
		f := strings.SplitN(l, " ", 4)
		switch {
		case len(f) >= 3 && f[0] == "P" && f[2] == "OK":
			res.ok++
		case len(f) >= 3 && f[0] == "P" && f[2] == "ERR":
			res.failed[f[1]] = strings.Join(f[3:], " ")
		}
	}
	return res
}
