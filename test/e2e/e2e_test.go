// Package e2e_test runs xdplb the way a user does: `make image`, then
// `docker compose up` of the repository's docker-compose.yml (and of a
// two-network variant), real HTTP, TCP and UDP through the balancer from the
// host and from containers, scaling under load, the balancer's log, and
// `docker compose down`. Each run uses its own project name and published
// port, so it never meets a demo running on the same engine.
//
// Runs as root (Docker, nsenter, bpftool); skipped otherwise. Environment:
//
//	XDPLB_E2E_BUILD=0                skip `make image`; use xdplb:latest and whoami:latest as they are
//	XDPLB_E2E_COMPOSE_OVERRIDE=FILE  add `-f FILE` to the demo project (try a variant: an image, a flag)
//
// TestMain prints "e2e: requests N failed F" over both tests at the end.
package e2e_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdplb/xdplb/test/dockerharness"
	"github.com/xdplb/xdplb/test/testkit"
)

func TestMain(m *testing.M) {
	code := m.Run()
	fmt.Printf("e2e: requests %d failed %d\n", totalRequests.Load(), totalFailed.Load())
	os.Exit(code)
}

// without returns the replicas of rs whose ID is not in others.
func without(rs, others []replica) []replica {
	skip := map[string]bool{}
	for _, o := range others {
		skip[o.ID] = true
	}
	var out []replica
	for _, r := range rs {
		if !skip[r.ID] {
			out = append(out, r)
		}
	}
	return out
}

func names(rs []replica) []string {
	var n []string
	for _, r := range rs {
		n = append(n, r.Name)
	}
	return n
}

// TestComposeDemo is issue 4 on docker-compose.yml itself: up and healthy,
// traffic through the published port and inside the network reaching every
// replica, scale 3 -> 5 -> 2 under continuous load without a failed request,
// exactly the expected backend transitions in the balancer's log, and a
// clean teardown.
func TestComposeDemo(t *testing.T) {
	h := dockerharness.New(t)
	root := dockerharness.ModuleRoot(t)
	dockerharness.HostBPFFS(t) // the compose file binds it for pinned state
	ensureImages(t, root)
	port := freePort(t)
	files := []string{filepath.Join(root, "docker-compose.yml")}
	if extra := os.Getenv("XDPLB_E2E_COMPOSE_OVERRIDE"); extra != "" {
		files = append(files, extra) // a variant under test, e.g. another image or log level
	}
	p := newProject(t, h, root, []string{"XDPLB_HTTP_PORT=" + strconv.Itoa(port)}, files...)
	t.Logf("project %s, balancer published on 127.0.0.1:%d", p.name, port)

	// 1. Up; the balancer and the replicas healthy.
	t0 := time.Now()
	p.up()
	t.Logf("up --wait: %s", time.Since(t0).Round(time.Millisecond))
	lb := p.one("lb")
	webs := p.containers("web")
	if len(webs) != 3 {
		t.Fatalf("want 3 web replicas, have %v", names(webs))
	}
	p.requireHealthy(append([]replica{lb}, webs...)...)
	progs := xdpPrograms(t, h, lb)
	if len(progs) != 1 {
		t.Errorf("balancer: want xdplb_main attached to one interface, have %v", progs)
	}
	// The balancer runs in the network namespace of lbnet (`xdplb hold`),
	// which owns the address.
	lbIP := p.networkIP(p.one("lbnet"), "default")

	// 2. Through the published port from here, and from a container on the
	// project's network; a new connection per request.
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	host := newTally()
	hostRequests(url, 200, 8, host)
	t.Logf("host -> 127.0.0.1:%d: %s", port, host)
	if _, failed := host.counts(); failed > 0 {
		t.Errorf("host: %d of 200 requests failed", failed)
	}
	requireEveryReplica(t, "host", host, webs)
	// Full NAT: whatever the client, the replica's peer is the balancer.
	for ip := range host.remotes {
		if ip != lbIP {
			t.Errorf("host: a replica saw peer %s, want the balancer %s (full NAT): %v", ip, lbIP, host.remotes)
		}
	}
	inNet := newTally()
	if err := p.clientRequests("client", "--url=http://lb:80/", 200, 10, inNet); err != nil {
		t.Fatal(err)
	}
	t.Logf("client container -> lb:80: %s", inNet)
	if _, failed := inNet.counts(); failed > 0 {
		t.Errorf("client container: %d of 200 requests failed", failed)
	}
	requireEveryReplica(t, "client container", inNet, webs)

	// 2b. `docker restart` of the balancer: a TCP session to the echo port
	// held across it, and new connections at once.
	restartKeepsFlows(t, p, lb, lbIP, url)

	// 3. Scale to 5 and back to 2 under continuous load from both sides.
	stop := make(chan struct{})
	hostLd, clientLd := newTally(), newTally()
	hostWG := hostLoad(url, 4, 5*time.Millisecond, 2*time.Minute, hostLd, stop)
	clientDone := p.clientLoad("client", "--url=http://lb:80/", 2*time.Minute, clientLd, stop)
	var clientErr error
	stopLoad := sync.OnceFunc(func() {
		close(stop)
		hostWG.Wait()
		clientErr = <-clientDone
	})
	t.Cleanup(stopLoad)

	loadStart := time.Now()
	t0 = time.Now()
	p.up("--scale", "web=5", "--no-recreate")
	t.Logf("scale to 5: %s", time.Since(t0).Round(time.Millisecond))
	webs5 := p.containers("web")
	if len(webs5) != 5 {
		t.Fatalf("after scaling to 5: have %v", names(webs5))
	}
	p.requireHealthy(webs5...)
	added := without(webs5, webs)
	if len(added) != 2 {
		t.Fatalf("scaling to 5 should add 2 replicas to %v, have %v", names(webs), names(webs5))
	}
	// Healthy is not yet balanced: the balancer hears of it by an event.
	// Bounded wait until both loads have been answered by every new replica.
	allAnswered := func() bool {
		for _, r := range added {
			if !hostLd.answered(r.ShortID()) || !clientLd.answered(r.ShortID()) {
				return false
			}
		}
		return true
	}
	if !testkit.Eventually(30*time.Second, allAnswered) {
		t.Errorf("new replicas %v did not all answer within 30s:\nhost: %s\nclient: %s", names(added), hostLd, clientLd)
	}

	scaleDown := time.Now()
	t0 = time.Now()
	p.up("--scale", "web=2", "--no-recreate")
	t.Logf("scale to 2: %s", time.Since(t0).Round(time.Millisecond))
	webs2 := p.containers("web")
	if len(webs2) != 2 {
		t.Fatalf("after scaling to 2: have %v", names(webs2))
	}
	removed := without(webs5, webs2)
	if len(removed) != 3 {
		t.Fatalf("scaling to 2 should take 3 of %v away, left %v", names(webs5), names(webs2))
	}
	// The load goes on a little on the two that are left, then stops.
	time.Sleep(3 * time.Second)
	stopLoad()
	loadEnd := time.Now()
	if clientErr != nil {
		t.Error(clientErr)
	}
	t.Logf("scale 3->5->2 under load, host -> published port: %s", hostLd)
	t.Logf("scale 3->5->2 under load, client container -> lb:80: %s", clientLd)
	hostOK, hostFailed := hostLd.counts()
	clOK, clFailed := clientLd.counts()
	t.Logf("scale under load: requests %d failed %d (host %d/%d, container %d/%d)",
		hostOK+hostFailed+clOK+clFailed, hostFailed+clFailed, hostFailed, hostOK+hostFailed, clFailed, clOK+clFailed)
	t.Logf("host failures while scaling up: %d, while scaling down: %d (%s after the scale-down began)",
		hostLd.failedBetween(loadStart, scaleDown), hostLd.failedBetween(scaleDown, loadEnd), loadEnd.Sub(scaleDown).Round(time.Millisecond))
	if hostFailed+clFailed > 0 {
		t.Errorf("scaling under load: %d requests failed (host %d, container %d)", hostFailed+clFailed, hostFailed, clFailed)
		logTimeline(t, p, hostLd, scaleDown)
	}
	// The demo's own client (100 requests every 5 s) ran all along too.
	demoRounds, demoFailed := demoClientRounds(t, p)
	t.Logf("demo client service: %d rounds, %d failed requests", demoRounds, demoFailed)
	if demoFailed > 0 {
		t.Errorf("the demo's client service saw %d failed requests", demoFailed)
	}

	// 4. One line per replica per transition in the balancer's log.
	removalLogged := func() bool {
		tr := transitions(testkit.ParseLog(p.lbLog()))
		for _, r := range removed {
			if tr[r.Name]["removed"] == 0 {
				return false
			}
		}
		return true
	}
	if !testkit.Eventually(15*time.Second, removalLogged) {
		t.Errorf("the balancer did not log the removal of %v within 15s", names(removed))
	}
	if !checkTransitions(t, transitions(testkit.ParseLog(p.lbLog())), webs5, removed) && hostFailed+clFailed == 0 {
		logTimeline(t, p, hostLd, scaleDown)
	}

	// 5. An upgrade: `up -d` with another balancer image recreates `lb`
	// alone, and a session held across it goes on.
	upgradeKeepsFlows(t, p, lbIP, url)

	// 6. Down, and nothing left behind.
	p.teardown(progs)
}

// upgradeKeepsFlows runs `docker compose up -d` with a new balancer image
// (xdplb:latest with one more label, as a rebuild would give): Compose must
// recreate `lb` and leave `lbnet`, the namespace, as it is; a session to the
// echo port held across it goes on, and new connections are answered.
func upgradeKeepsFlows(t *testing.T, p *project, lbIP, url string) {
	t.Helper()
	img := p.name + "-upgrade:test"
	if out, err := run(context.Background(), "", nil, "sh", "-c",
		"printf 'FROM xdplb:latest\nLABEL xdplb.test.upgrade=1\n' | docker build -q -t "+img+" -"); err != nil {
		t.Fatalf("building %s: %v\n%s", img, err, out)
	}
	t.Cleanup(func() { _, _ = run(context.Background(), "", nil, "docker", "rmi", "-f", img) })
	holder, lb := p.one("lbnet"), p.one("lb")
	s := holdEcho(t, lbIP)
	defer s.Close()
	if out, err := p.composeWith([]string{"XDPLB_IMAGE=" + img}, upArgs()...); err != nil {
		t.Fatalf("up -d with a new balancer image: %v\n%s", err, out)
	}
	if now := p.one("lbnet"); now.ID != holder.ID {
		t.Errorf("up -d with a new balancer image recreated the namespace's holder lbnet (%s -> %s): every flow ends with it", holder.ShortID(), now.ShortID())
	}
	if now := p.one("lb"); now.ID == lb.ID {
		t.Errorf("up -d with a new balancer image did not recreate lb")
	}
	fresh := newTally()
	hostRequests(url, 20, 1, fresh)
	if _, failed := fresh.counts(); failed > 0 {
		t.Errorf("new connections after the upgrade: %d of 20 failed", failed)
	}
	if err := s.echo("after the upgrade"); err != nil {
		t.Errorf("echo session held across up -d with a new image: %v", err)
	}
	// lbLog is the new container's alone.
	if !testkit.Eventually(10*time.Second, func() bool { return strings.Contains(p.lbLog(), "adopted pinned state") }) {
		t.Errorf("the upgraded balancer did not adopt the pinned state")
	}
	t.Logf("up -d with a new balancer image: lb recreated, lbnet kept, the held echo session went on, 20 new connections answered")
}

// echoSession is a TCP session to the echo port (9000/tcp) through the
// balancer: whoami greets with its name, then echoes lines.
type echoSession struct {
	net.Conn
	br       *bufio.Reader
	greeting string
}

func holdEcho(t *testing.T, lbIP string) *echoSession {
	t.Helper()
	c, err := net.DialTimeout("tcp4", lbIP+":9000", 3*time.Second)
	if err != nil {
		t.Fatalf("echo port: %v", err)
	}
	s := &echoSession{Conn: c, br: bufio.NewReader(c)}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if s.greeting, err = s.br.ReadString('\n'); err != nil {
		t.Fatalf("echo port greeting: %v", err)
	}
	if err := s.echo("first"); err != nil {
		t.Fatalf("echo session: %v", err)
	}
	return s
}

func (s *echoSession) echo(line string) error {
	_ = s.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(s, line+"\n"); err != nil {
		return err
	}
	got, err := s.br.ReadString('\n')
	if err == nil && got != line+"\n" {
		err = fmt.Errorf("echoed %q, want %q (greeted by %s)", got, line, strings.TrimSpace(s.greeting))
	}
	return err
}

// restartKeepsFlows is issue 10's story on the demo: a session to the echo
// port (9000/tcp) through the balancer, open across `docker restart` of the
// balancer's container, echoes on from the same replica; new connections
// work within 2 s of the restart returning, none failing; and the new
// process adopted the pinned state.
func restartKeepsFlows(t *testing.T, p *project, lb replica, lbIP, url string) {
	t.Helper()
	s := holdEcho(t, lbIP)
	defer s.Close()
	t0 := time.Now()
	p.h.Docker("restart", "-t", "10", lb.ID)
	up := time.Now()
	fresh := newTally()
	hostRequests(url, 20, 1, fresh)
	answered := time.Since(up)
	if _, failed := fresh.counts(); failed > 0 {
		t.Errorf("new connections right after docker restart: %d of 20 failed", failed)
	}
	if answered > 2*time.Second {
		t.Errorf("20 new connections took %s after docker restart returned, want under 2s", answered)
	}
	if err := s.echo("after the restart"); err != nil {
		t.Errorf("echo session held across docker restart: %v", err)
	}
	if !testkit.Eventually(10*time.Second, func() bool { return strings.Contains(p.lbLog(), "adopted pinned state") }) {
		t.Errorf("the restarted balancer did not adopt the pinned state")
	}
	t.Logf("docker restart of the balancer: %s; the held echo session went on; 20 new connections answered %s after it returned",
		up.Sub(t0).Round(time.Millisecond), answered.Round(time.Millisecond))
}

// checkTransitions: every replica that existed was added once (and became
// ready once if it was added while starting); every replica taken away was
// drained once and removed once; the others neither.
func checkTransitions(t *testing.T, tr map[string]map[string]int, all, removed []replica) bool {
	t.Helper()
	good := true
	gone := map[string]bool{}
	for _, r := range removed {
		gone[r.Name] = true
	}
	known := map[string]bool{}
	for _, r := range all {
		known[r.Name] = true
		c := tr[r.Name]
		want := map[string]int{"added": 1, "drained": 0, "removed": 0, "no-ports": 0}
		if c["added-starting"] > 0 {
			want["ready"] = 1
		} else {
			want["ready"] = 0
		}
		if gone[r.Name] {
			want["drained"], want["removed"] = 1, 1
		}
		var bad []string
		for k, n := range want {
			if c[k] != n {
				bad = append(bad, fmt.Sprintf("%s %d (want %d)", k, c[k], n))
			}
		}
		sort.Strings(bad)
		if len(bad) > 0 {
			good = false
			t.Errorf("balancer log, backend=%s (taken away: %v): %s; all its counts: %v", r.Name, gone[r.Name], strings.Join(bad, ", "), c)
		}
	}
	for name := range tr {
		if !known[name] {
			good = false
			t.Errorf("balancer log: transitions of backend=%q, which is none of the replicas: %v", name, tr[name])
		}
	}
	return good
}

// logTimeline explains a scale-down that went wrong: from one second before
// `up --scale web=2` began (t=0) to three seconds after, the host load's
// outcomes per 100 ms, the project's container events, and the balancer's
// log lines about backends, all on one clock.
func logTimeline(t *testing.T, p *project, tl *tally, t0 time.Time) {
	t.Helper()
	type entry struct {
		at   time.Duration
		what string
	}
	var es []entry
	inWindow := func(ts time.Time) bool { d := ts.Sub(t0); return d > -time.Second && d < 3*time.Second }
	bucket := func(ts time.Time) time.Duration { return ts.Sub(t0).Truncate(100 * time.Millisecond) }

	// Host requests per 100 ms: how many succeeded (by replica) and failed.
	type bucketCounts struct {
		ok, failed int
		byHost     map[string]int
	}
	buckets := map[time.Duration]*bucketCounts{}
	at := func(b time.Duration) *bucketCounts {
		if buckets[b] == nil {
			buckets[b] = &bucketCounts{byHost: map[string]int{}}
		}
		return buckets[b]
	}
	tl.mu.Lock()
	for i, ts := range tl.okAt {
		if inWindow(ts) {
			c := at(bucket(ts))
			c.ok++
			c.byHost[tl.okHost[i]]++
		}
	}
	for _, ts := range tl.failedAt {
		if inWindow(ts) {
			at(bucket(ts)).failed++
		}
	}
	tl.mu.Unlock()
	for b, c := range buckets {
		hosts := make([]string, 0, len(c.byHost))
		for h, n := range c.byHost {
			hosts = append(hosts, fmt.Sprintf("%s=%d", h, n))
		}
		sort.Strings(hosts)
		es = append(es, entry{b, fmt.Sprintf("host requests in the next 100ms: ok %d (%s) failed %d", c.ok, strings.Join(hosts, " "), c.failed)})
	}

	events, err := run(context.Background(), "", nil, "docker", "events",
		"--since", fmt.Sprintf("%d.%09d", t0.Add(-time.Second).Unix(), t0.Add(-time.Second).Nanosecond()),
		"--until", fmt.Sprintf("%d", time.Now().Unix()+1),
		"--filter", "label=com.docker.compose.project="+p.name, "--filter", "type=container",
		"--format", "{{.TimeNano}} {{.Action}} {{.Actor.Attributes.name}}")
	if err != nil {
		t.Logf("timeline: %v", err)
	}
	for _, l := range strings.Split(strings.TrimSpace(events), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 || strings.HasPrefix(f[1], "exec_") {
			continue
		}
		ns, _ := strconv.ParseInt(f[0], 10, 64)
		if at := time.Unix(0, ns); inWindow(at) {
			es = append(es, entry{at.Sub(t0), "engine event: " + strings.Join(f[1:], " ")})
		}
	}

	lbLog, _ := p.compose("logs", "-t", "--no-log-prefix", "--no-color", "lb")
	for _, l := range strings.Split(lbLog, "\n") {
		ts, rest, _ := strings.Cut(l, " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || !inWindow(at) {
			continue
		}
		if f := testkit.ParseLogfmt(rest); strings.HasPrefix(f["msg"], "backend") || strings.HasPrefix(f["msg"], "sync") {
			es = append(es, entry{at.Sub(t0), fmt.Sprintf("lb: %s backend=%s why=%q", f["msg"], f["backend"], f["why"])})
		}
	}

	sort.SliceStable(es, func(i, j int) bool { return es[i].at < es[j].at })
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "\n  %+8dms  %s", e.at.Milliseconds(), e.what)
	}
	t.Logf("scale-down timeline (t=0: docker compose up --scale web=2):%s", b.String())
}

var roundSummary = regexp.MustCompile(`requests (\d+) ok (\d+) failed (\d+)`)

// demoClientRounds reads the summaries of the compose client service's
// rounds from its log.
func demoClientRounds(t *testing.T, p *project) (rounds, failed int) {
	t.Helper()
	out := p.mustCompose("logs", "--no-log-prefix", "--no-color", "client")
	for _, m := range roundSummary.FindAllStringSubmatch(out, -1) {
		rounds++
		n, _ := strconv.Atoi(m[3])
		ok, _ := strconv.Atoi(m[2])
		failed += n
		totalRequests.Add(int64(ok + n))
		totalFailed.Add(int64(n))
	}
	return rounds, failed
}

// TestComposeFrontendBackend: the balancer joins two networks; the replicas
// are only on `backend`, the client only on `frontend`. Every request from
// the client to the balancer's frontend address is answered by a replica on
// the other network, so XDP forwards between the two interfaces.
func TestComposeFrontendBackend(t *testing.T) {
	h := dockerharness.New(t)
	root := dockerharness.ModuleRoot(t)
	ensureImages(t, root)
	p := newProject(t, h, root, nil, filepath.Join(root, "test", "e2e", "docker-compose.frontend-backend.yml"))
	t.Logf("project %s", p.name)

	t0 := time.Now()
	p.up()
	t.Logf("up --wait: %s", time.Since(t0).Round(time.Millisecond))
	lb, client := p.one("lb"), p.one("client")
	webs := p.containers("web")
	if len(webs) != 3 {
		t.Fatalf("want 3 web replicas, have %v", names(webs))
	}
	p.requireHealthy(append([]replica{lb, client}, webs...)...)

	// The topology is what the test claims.
	onlyOn := func(r replica, nets ...string) {
		t.Helper()
		ins := h.Inspect(r.ID)
		var have []string
		for n := range ins.NetworkSettings.Networks {
			have = append(have, n)
		}
		sort.Strings(have)
		var want []string
		for _, n := range nets {
			want = append(want, p.name+"_"+n)
		}
		sort.Strings(want)
		if fmt.Sprint(have) != fmt.Sprint(want) {
			t.Fatalf("%s: networks %v, want %v", r.Name, have, want)
		}
	}
	onlyOn(lb, "frontend", "backend")
	onlyOn(client, "frontend")
	for _, w := range webs {
		onlyOn(w, "backend")
	}
	feIP := p.networkIP(lb, "frontend")

	// Docker isolates the bridges: straight to a replica, the client gets
	// nowhere. So whatever answers below went through the balancer.
	webIP := p.networkIP(webs[0], "backend")
	out, _ := p.compose("exec", "-T", "client", "/whoami", "client", "--url=http://"+webIP+":8080/", "--n=1", "--timeout=1s")
	if _, failed, _, _, err := parseClient(out); err != nil || failed != 1 {
		t.Fatalf("the client reached replica %s directly across networks (or did not run): %v\n%s", webIP, err, out)
	}

	// HTTP, TCP echo and UDP through the frontend address.
	for _, c := range []struct {
		what   string
		target string
		n      int
	}{
		{"http", "--url=http://" + feIP + ":80/", 300},
		{"tcp", "--tcp=" + feIP + ":9000", 100},
		{"udp", "--udp=" + feIP + ":9001", 100},
	} {
		tl := newTally()
		if err := p.clientRequests("client", c.target, c.n, 10, tl); err != nil {
			t.Fatal(err)
		}
		t.Logf("client (frontend) -> %s %s: %s", c.what, feIP, tl)
		if ok, failed := tl.counts(); failed > 0 || ok != c.n {
			t.Errorf("%s via the frontend address: %d ok, %d failed of %d", c.what, ok, failed, c.n)
		}
		requireEveryReplica(t, c.what+" via frontend", tl, webs)
	}

	// Bulk across the two networks, 100 MB each way, verified by the
	// client: GSO super-packets larger than the other network's MTU.
	for _, bulk := range []string{"--data=100000000", "--upload=100000000"} {
		out, runErr := p.compose("exec", "-T", "client", "/whoami", "client", "--url=http://"+feIP+":80/", bulk, "--n=1", "--timeout=120s")
		ok, failed, _, errs, err := parseClient(out)
		if err != nil || ok != 1 || failed != 0 {
			t.Errorf("client %s via the frontend address: %d ok, %d failed, errors %v (%v, exec: %v)\n%s", bulk, ok, failed, errs, err, runErr, out)
		} else {
			t.Logf("client %s via the frontend address: ok", bulk)
		}
	}

	// XDP on both interfaces: in the log and in the kernel.
	attached := map[string]string{}
	for _, l := range testkit.ParseLog(p.lbLog()) {
		if l["msg"] == "xdp attached" {
			attached[l["interface"]] = l["ip"]
		}
	}
	if len(attached) != 2 {
		t.Errorf("balancer log: want \"xdp attached\" on 2 interfaces, have %v", attached)
	}
	progs := xdpPrograms(t, h, lb)
	if len(progs) != 2 {
		t.Errorf("balancer: want xdplb_main attached to 2 interfaces, have %v", progs)
	}
	t.Logf("xdp attached: %v, programs %v", attached, progs)

	p.teardown(progs)
}
