package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xdplb/xdplb/test/dockerharness"
	"github.com/xdplb/xdplb/test/testkit"
)

// Every request the tests send, for the summary line TestMain prints.
var totalRequests, totalFailed atomic.Int64

// commandTimeout bounds every docker and make invocation: a hung engine
// fails the test instead of eating the go test timeout.
const commandTimeout = 2 * time.Minute

// run runs a command and returns its stdout; the error quotes stderr.
func run(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Compose and make start children; a timeout must not leave them behind.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\nstderr: %s", name, strings.Join(args, " "), err, lastLines(stderr.String(), 30))
	}
	return stdout.String(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

var (
	imagesOnce sync.Once
	imagesErr  error
)

// ensureImages builds xdplb:latest, whoami:latest and xdplb-hold:1 from this tree with
// `make image` (host-built binaries, no registry; a few seconds when warm),
// once per test binary. XDPLB_E2E_BUILD=0 uses the images as they are, for
// a caller that has just built them.
func ensureImages(t *testing.T, root string) {
	t.Helper()
	imagesOnce.Do(func() {
		if os.Getenv("XDPLB_E2E_BUILD") != "0" {
			if out, err := run(context.Background(), root, nil, "make", "--no-print-directory", "image"); err != nil {
				imagesErr = fmt.Errorf("make image: %w\nstdout: %s", err, lastLines(out, 20))
				return
			}
		}
		for _, img := range []string{"xdplb:latest", "whoami:latest", "xdplb-hold:1"} {
			if _, err := run(context.Background(), root, nil, "docker", "image", "inspect", img); err != nil {
				imagesErr = fmt.Errorf("image %s missing (run `make image`): %w", img, err)
				return
			}
		}
	})
	if imagesErr != nil {
		t.Fatal(imagesErr)
	}
}

// project is one Compose project, unique to a test run, so that it never
// meets a demo someone is running on the same engine.
type project struct {
	t     *testing.T
	h     *dockerharness.H
	name  string
	root  string
	files []string
	env   []string
	// finalLBLog is the balancer's log as it was just before teardown.
	finalLBLog string
}

// newProject names a project xdplbe2e-<random> and tears it down (with
// volumes and orphans) at cleanup, after dumping its state if the test
// failed.
func newProject(t *testing.T, h *dockerharness.H, root string, env []string, files ...string) *project {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	p := &project{t: t, h: h, name: "xdplbe2e-" + hex.EncodeToString(b[:]), root: root, files: files, env: env}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := p.compose("ps", "-a")
			t.Logf("%s: docker compose ps -a:\n%s", p.name, out)
			log := p.finalLBLog
			if log == "" {
				log = p.lbLog()
			}
			t.Logf("%s: lb log:\n%s", p.name, lastLines(log, 120))
		}
		if _, err := p.compose("down", "-v", "--remove-orphans", "-t", "5"); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return p
}

func (p *project) compose(args ...string) (string, error) {
	return p.composeWith(nil, args...)
}

// composeWith is compose with more environment for the compose file.
func (p *project) composeWith(env []string, args ...string) (string, error) {
	full := []string{"compose", "-p", p.name}
	for _, f := range p.files {
		full = append(full, "-f", f)
	}
	return run(context.Background(), p.root, append(slices.Clone(p.env), env...), "docker", append(full, args...)...)
}

func (p *project) mustCompose(args ...string) string {
	p.t.Helper()
	out, err := p.compose(args...)
	if err != nil {
		p.t.Fatal(err)
	}
	return out
}

// up starts (or rescales) the project and waits until every container is
// healthy. Never builds or pulls: there is no registry, and the images come
// from ensureImages.
func (p *project) up(extra ...string) {
	p.t.Helper()
	p.mustCompose(upArgs(extra...)...)
}

func upArgs(extra ...string) []string {
	return append([]string{"up", "-d", "--wait", "--wait-timeout", "90", "--no-build", "--pull", "never"}, extra...)
}

// lbLog is the balancer's whole log, without the Compose prefix.
func (p *project) lbLog() string {
	out, err := p.compose("logs", "--no-log-prefix", "--no-color", "lb")
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return out
}

// replica is one container of a service.
type replica struct{ ID, Name string }

func (r replica) ShortID() string { return r.ID[:12] }

// containers lists the project's containers of a service (all states).
func (p *project) containers(service string) []replica {
	p.t.Helper()
	out := p.h.Docker("ps", "-a", "--no-trunc",
		"--filter", "label=com.docker.compose.project="+p.name,
		"--filter", "label=com.docker.compose.service="+service,
		"--format", "{{.ID}} {{.Names}}")
	var rs []replica
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 {
			rs = append(rs, replica{ID: f[0], Name: f[1]})
		}
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].Name < rs[j].Name })
	return rs
}

func (p *project) one(service string) replica {
	p.t.Helper()
	rs := p.containers(service)
	if len(rs) != 1 {
		p.t.Fatalf("%s: want 1 container of %s, have %v", p.name, service, rs)
	}
	return rs[0]
}

// requireHealthy checks what --wait promised, from the engine's side.
func (p *project) requireHealthy(rs ...replica) {
	p.t.Helper()
	for _, r := range rs {
		ins := p.h.Inspect(r.ID)
		if ins.State == nil || ins.State.Health == nil || ins.State.Health.Status != "healthy" {
			p.t.Fatalf("%s is not healthy: %+v", r.Name, ins.State)
		}
	}
}

// networkIP is a container's address on one of the project's networks.
func (p *project) networkIP(r replica, network string) string {
	p.t.Helper()
	return p.h.IP(r.ID, p.name+"_"+network)
}

// leftovers lists whatever of the project still exists in the engine.
func (p *project) leftovers() []string {
	p.t.Helper()
	var left []string
	filter := "label=com.docker.compose.project=" + p.name
	for _, q := range [][]string{
		{"ps", "-a", "--filter", filter, "--format", "container {{.Names}}"},
		{"network", "ls", "--filter", filter, "--format", "network {{.Name}}"},
		{"volume", "ls", "--filter", filter, "--format", "volume {{.Name}}"},
		// Belt and braces: Compose names everything PROJECT-... or PROJECT_...
		{"ps", "-a", "--filter", "name=" + p.name, "--format", "container {{.Names}}"},
		{"network", "ls", "--filter", "name=" + p.name, "--format", "network {{.Name}}"},
	} {
		out := p.h.Docker(q...)
		if out != "" {
			left = append(left, strings.Split(out, "\n")...)
		}
	}
	return left
}

// teardown is step 6: down, then nothing of the project may remain, and
// the XDP programs the balancer had attached must be gone from the kernel
// (its network namespace, and with it its interfaces, went with it).
func (p *project) teardown(progs map[string]int) {
	p.t.Helper()
	p.finalLBLog = p.lbLog()
	p.mustCompose("down", "-v", "--remove-orphans", "-t", "5")
	dockerharness.RemovePinnedState(p.t, p.name)
	if left := p.leftovers(); len(left) > 0 {
		p.t.Errorf("after docker compose down: still present: %v", left)
	}
	for ifname, id := range progs {
		// The program may outlive the detach for an RCU grace period.
		deadline := time.Now().Add(10 * time.Second)
		for {
			out, err := run(context.Background(), "", nil, "bpftool", "prog", "show", "id", strconv.Itoa(id))
			if err != nil {
				break
			}
			if time.Now().After(deadline) {
				p.t.Errorf("XDP program %d (was on the balancer's %s) still loaded after down: %s", id, ifname, strings.TrimSpace(out))
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// xdpPrograms returns, per interface of the container's network namespace,
// the id of the XDP program attached to it, read with `ip -details -json
// link` in that namespace. Only programs named xdplb_main count.
func xdpPrograms(t *testing.T, h *dockerharness.H, r replica) map[string]int {
	t.Helper()
	ins := h.Inspect(r.ID)
	if ins.State == nil || ins.State.Pid == 0 {
		t.Fatalf("%s: not running", r.Name)
	}
	out, err := run(context.Background(), "", nil, "nsenter", "-t", strconv.Itoa(ins.State.Pid), "-n", "ip", "-details", "-json", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	type prog struct {
		ID   int    `json:"id"`
		Name string `json:"name"`
	}
	var links []struct {
		Ifname string `json:"ifname"`
		XDP    *struct {
			Mode     int   `json:"mode"`
			Prog     *prog `json:"prog"`
			Attached []struct {
				Prog *prog `json:"prog"`
			} `json:"attached"`
		} `json:"xdp"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		t.Fatalf("parsing ip -json link: %v\n%s", err, out)
	}
	progs := map[string]int{}
	for _, l := range links {
		if l.XDP == nil {
			continue
		}
		ps := []*prog{l.XDP.Prog}
		for _, a := range l.XDP.Attached {
			ps = append(ps, a.Prog)
		}
		for _, pr := range ps {
			if pr != nil && pr.Name == "xdplb_main" {
				progs[l.Ifname] = pr.ID
			}
		}
	}
	return progs
}

// freePort asks the kernel for an unused TCP port to publish the balancer
// on. Another process could take it before Compose binds it; then `up`
// fails loudly, which is acceptable for a test.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// tally counts the outcome of requests, per replica (hostname) and per
// error, safe for concurrent use.
type tally struct {
	mu     sync.Mutex
	ok     int
	failed int
	byHost map[string]int
	errs   map[string]int
	// remotes: the peer address each replica reported (the balancer, with full NAT).
	remotes map[string]int
	// failedAt: when each failure happened (for requests sent from here).
	failedAt []time.Time
	// okAt, okHost: when each success happened and who answered.
	okAt   []time.Time
	okHost []string
}

// localPort hides the client's ephemeral port, so that equal errors count
// as one.
var localPort = regexp.MustCompile(`(\d+\.\d+\.\d+\.\d+):\d+->`)

func newTally() *tally {
	return &tally{byHost: map[string]int{}, errs: map[string]int{}, remotes: map[string]int{}}
}

func (t *tally) add(host, remoteIP string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	totalRequests.Add(1)
	if err != nil {
		t.failed++
		t.errs[localPort.ReplaceAllString(err.Error(), "$1:*->")]++
		t.failedAt = append(t.failedAt, time.Now())
		totalFailed.Add(1)
		return
	}
	t.ok++
	t.byHost[host]++
	t.okAt = append(t.okAt, time.Now())
	t.okHost = append(t.okHost, host)
	if remoteIP != "" {
		t.remotes[remoteIP]++
	}
}

// merge adds a `whoami client` round's counts.
func (t *tally) merge(ok, failed int, byHost, errs map[string]int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	totalRequests.Add(int64(ok + failed))
	totalFailed.Add(int64(failed))
	t.ok += ok
	t.failed += failed
	for h, n := range byHost {
		t.byHost[h] += n
	}
	for e, n := range errs {
		t.errs[e] += n
	}
}

func (t *tally) counts() (ok, failed int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ok, t.failed
}

// failedBetween counts the failures (of requests sent from here) in [from, to).
func (t *tally) failedBetween(from, to time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, at := range t.failedAt {
		if !at.Before(from) && at.Before(to) {
			n++
		}
	}
	return n
}

func (t *tally) answered(host string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byHost[host] > 0
}

func (t *tally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	hosts := make([]string, 0, len(t.byHost))
	for h := range t.byHost {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	var b strings.Builder
	fmt.Fprintf(&b, "requests %d ok %d failed %d; per replica:", t.ok+t.failed, t.ok, t.failed)
	for _, h := range hosts {
		fmt.Fprintf(&b, " %s=%d", h, t.byHost[h])
	}
	if len(t.errs) > 0 {
		b.WriteString("; errors:")
		for e, n := range t.errs {
			fmt.Fprintf(&b, "\n  %d x %s", n, e)
		}
	}
	return b.String()
}

// requireEveryReplica fails unless every replica answered at least once and
// nothing else did (an unknown hostname would be a stale or foreign backend).
func requireEveryReplica(t *testing.T, what string, tl *tally, rs []replica) {
	t.Helper()
	want := map[string]bool{}
	for _, r := range rs {
		want[r.ShortID()] = true
		if !tl.answered(r.ShortID()) {
			t.Errorf("%s: replica %s (%s) never answered: %s", what, r.Name, r.ShortID(), tl)
		}
	}
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for h := range tl.byHost {
		if !want[h] {
			t.Errorf("%s: answer from %q, which is none of the replicas %v", what, h, rs)
		}
	}
}

// httpClient opens a new connection per request, so each request is a new
// flow that Maglev may place on another replica.
var httpClient = &http.Client{
	Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext:       (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	},
	Timeout: 5 * time.Second,
}

// get sends one GET / to a whoami through the balancer and returns who
// answered and the peer address it saw.
func get(url string) (host, remoteIP string, err error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", "", fmt.Errorf("reading body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("status %s", resp.Status)
	}
	for _, line := range strings.Split(string(body), "\n") {
		k, v, _ := strings.Cut(line, " ")
		switch k {
		case "hostname":
			host = v
		case "remote":
			if ip, _, err := net.SplitHostPort(v); err == nil {
				remoteIP = ip
			}
		}
	}
	if host == "" || host != resp.Header.Get("X-Hostname") {
		return "", "", fmt.Errorf("answer without a consistent hostname (header %q): %q", resp.Header.Get("X-Hostname"), body)
	}
	return host, remoteIP, nil
}

// hostRequests sends n requests, conc at a time, and adds them to tl.
func hostRequests(url string, n, conc int, tl *tally) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				tl.add(get(url))
			}
		}()
	}
	wg.Wait()
}

// hostLoad sends requests with `workers` in flight, a pause between two
// requests of a worker, until stop is closed or maxDuration passes.
func hostLoad(url string, workers int, pause, maxDuration time.Duration, tl *tally, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	deadline := time.Now().Add(maxDuration)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				select {
				case <-stop:
					return
				default:
				}
				tl.add(get(url))
				time.Sleep(pause)
			}
		}()
	}
	return &wg
}

var (
	clientSummary = regexp.MustCompile(`(?m)^requests (\d+) ok (\d+) failed (\d+)$`)
	clientError   = regexp.MustCompile(`^\s+(\d+) x (.*)$`)
)

// parseClient reads `whoami client` output: the per-hostname table, the
// distinct errors, and the summary line.
func parseClient(out string) (ok, failed int, byHost, errs map[string]int, err error) {
	m := clientSummary.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, nil, nil, errors.New("no summary line")
	}
	ok, _ = strconv.Atoi(m[2])
	failed, _ = strconv.Atoi(m[3])
	byHost, errs = map[string]int{}, map[string]int{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "HOSTNAME"):
			section = "hosts"
		case line == "errors:":
			section = "errors"
		case strings.HasPrefix(line, "requests "):
			section = ""
		case section == "hosts":
			if f := strings.Fields(line); len(f) == 3 {
				n, _ := strconv.Atoi(f[1])
				byHost[f[0]] = n
			}
		case section == "errors":
			if em := clientError.FindStringSubmatch(line); em != nil {
				n, _ := strconv.Atoi(em[1])
				errs[em[2]] = n
			}
		}
	}
	sum := 0
	for _, n := range byHost {
		sum += n
	}
	if sum != ok {
		return 0, 0, nil, nil, fmt.Errorf("table sums to %d, summary says ok %d", sum, ok)
	}
	return ok, failed, byHost, errs, nil
}

// clientRequests runs `whoami client` in a container of the project (a new
// connection or socket per request) and adds its counts to tl. target is
// the client's mode flag: --url=..., --tcp=HOST:PORT or --udp=HOST:PORT.
func (p *project) clientRequests(service, target string, n, conc int, tl *tally) error {
	out, runErr := p.compose("exec", "-T", service, "/whoami", "client", target,
		"--n="+strconv.Itoa(n), "--concurrency="+strconv.Itoa(conc), "--timeout=5s")
	ok, failed, byHost, errs, err := parseClient(out)
	if err != nil {
		// No summary: the client did not run (exec failed), which is not a
		// request failure but a broken test setup.
		return fmt.Errorf("whoami client in %s: %v (exec: %v)\n%s", service, err, runErr, out)
	}
	tl.merge(ok, failed, byHost, errs)
	return nil
}

// clientLoad repeats short `whoami client` rounds in a container until stop
// is closed or maxDuration passes. A round in flight when stop closes is
// finished and counted.
func (p *project) clientLoad(service, target string, maxDuration time.Duration, tl *tally, stop <-chan struct{}) <-chan error {
	done := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(maxDuration)
		for time.Now().Before(deadline) {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if err := p.clientRequests(service, target, 100, 4, tl); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	return done
}

// transitions counts the balancer's backend log lines per backend name and
// transition. "added" covers "backend added" and "backend added, draining"
// (added while starting, i.e. not yet healthy: weight 0), which is also
// counted as "added-starting". Lines without the ports= field every
// transition must carry are counted as "no-ports".
func transitions(lines []testkit.LogLine) map[string]map[string]int {
	c := map[string]map[string]int{}
	bump := func(name, kind string) {
		if c[name] == nil {
			c[name] = map[string]int{}
		}
		c[name][kind]++
	}
	for _, l := range lines {
		name := l["backend"]
		switch l["msg"] {
		case "backend added":
			bump(name, "added")
		case "backend added, draining":
			bump(name, "added")
			bump(name, "added-starting")
		case "backend ready":
			bump(name, "ready")
		case "backend drained":
			bump(name, "drained")
		case "backend removed":
			bump(name, "removed")
		default:
			continue
		}
		if l["ports"] == "" {
			bump(name, "no-ports")
		}
	}
	return c
}
