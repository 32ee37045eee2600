package docker_test

import (
	"strings"
	"testing"
	"time"
)

// threeReplicas starts the balancer in front of web1..web3 and waits until
// all three answer through it.
func threeReplicas(t *testing.T, lbArgs ...string) (*env, []string) {
	e := newEnv(t)
	webs := []string{e.backend("web1"), e.backend("web2"), e.backend("web3")}
	e.startLB(lbArgs...)
	e.waitHealthy(webs...)
	e.waitServing(20*time.Second, webs...)
	return e, webs
}

// loadArgs is continuous new-connection load: 8 loops, each a new flow
// every 5 ms at most (a few hundred new flows per second here).
func (e *env) loadArgs() []string {
	return []string{"-url=" + e.url(), "-workers=8", "-every=5ms", "-timeout=3s", "-until-eof"}
}

// stopUnderLoad runs `docker stop victim` under continuous new-connection
// load and returns the probe's records, when the stop was called, and the
// balancer's "backend removed" line for the victim.
func stopUnderLoad(t *testing.T, e *env, webs []string, victim string) ([]rec, time.Time, logLine) {
	p := e.startProbe(e.loadArgs()...)
	p.waitFor(t, "load on every replica", 10*time.Second, func(rs []rec) bool {
		for _, w := range webs {
			if count(rs, w) < 20 {
				return false
			}
		}
		return true
	})
	mark := e.logs.mark()
	t0 := time.Now()
	e.h.Docker("stop", victim)
	stopped := time.Now()
	removed := e.logs.waitFor(t, mark, "the stopped replica removed", 15*time.Second, backendEvent("backend removed", victim))
	time.Sleep(time.Second)
	rs := p.stop(t)

	var last time.Time
	for _, r := range between(rs, t0, time.Now()) {
		if r.host == victim && r.start.After(last) {
			last = r.start
		}
	}
	lastNew := "none"
	if !last.IsZero() {
		lastNew = last.Sub(t0).Round(time.Millisecond).String() + " after the stop"
	}
	drained := "never"
	if l, ok := e.logs.poll(mark, 0, backendEvent("backend drained", victim)); ok {
		drained = l.at.Sub(t0).Round(time.Millisecond).String() + " after the stop"
	}
	t.Logf("docker stop returned after %s; drain logged %s, removal %s after; last request answered by %s started %s; load: %s",
		stopped.Sub(t0).Round(time.Millisecond), drained, removed.at.Sub(t0).Round(time.Millisecond), victim, lastNew, summarize(rs))
	logFailures(t, rs, t0, "the stop")
	// Whatever the backend does, nothing reaches it once it is removed, and
	// the others carry on.
	if n := count(between(rs, removed.at, time.Now()), victim); n > 0 {
		t.Errorf("%d requests reached %s after it was removed", n, victim)
	}
	for _, w := range webs {
		if w != victim && count(between(rs, removed.at, time.Now()), w) == 0 {
			t.Errorf("%s got no new flows after %s was removed", w, victim)
		}
	}
	return rs, t0, removed
}

// `docker stop` drains: the balancer sees the kill event, gives the replica
// no new flows, and removes it when it dies. Under continuous new-connection
// load not one request may fail. That takes both sides: Docker emits the
// kill event only after delivering SIGTERM, so the balancer drains some
// 100-200 ms after the replica learnt it is stopping, and whoami keeps
// accepting for a moment after SIGTERM (its --shutdown-delay) for that.
func TestDockerStopDrainsWithoutFailures(t *testing.T) {
	e, webs := threeReplicas(t)
	mark := e.logs.mark()
	rs, _, removed := stopUnderLoad(t, e, webs, webs[1])
	checkDrained(t, e, mark, rs, removed, webs[1])
}

// A container's own stop signal counts as stopping too: this replica's is
// SIGWINCH, which whoami ignores, so it serves on until Docker's SIGKILL
// 2 s later; the balancer must drain it on the kill event all the same.
func TestDockerStopCustomStopSignal(t *testing.T) {
	e := newEnv(t)
	webs := []string{e.backend("web1"), e.backend("web2", "--stop-signal=SIGWINCH", "--stop-timeout=2"), e.backend("web3")}
	e.startLB()
	e.waitHealthy(webs...)
	e.waitServing(20*time.Second, webs...)
	mark := e.logs.mark()
	rs, t0, removed := stopUnderLoad(t, e, webs, webs[1])
	checkDrained(t, e, mark, rs, removed, webs[1])
	if removed.at.Sub(t0) < time.Second {
		t.Errorf("removed %s after the stop: the replica should have lived until its SIGKILL 2 s later", removed.at.Sub(t0))
	}
}

// checkDrained: the victim was drained (reason stopping) before its
// removal, new flows stopped reaching it right after, and nothing failed.
func checkDrained(t *testing.T, e *env, mark int, rs []rec, removed logLine, victim string) {
	t.Helper()
	drained, ok := e.logs.poll(mark, 0, backendEvent("backend drained", victim))
	if !ok {
		t.Fatalf("no \"backend drained\" line for %s before its removal", victim)
	}
	if drained.at.After(removed.at) {
		t.Errorf("removed (%s) before drained (%s)", removed.text, drained.text)
	}
	if drained.kv["reason"] != "stopping" {
		t.Errorf("drained with reason %q, want stopping: %s", drained.kv["reason"], drained.text)
	}
	if f := failures(rs); len(f) > 0 {
		t.Errorf("%d of %d requests failed around docker stop, want none: %s", len(f), len(rs), summarize(f))
	}
	// drained.at is when the test read the line, after the maps changed.
	if n := count(between(rs, drained.at.Add(200*time.Millisecond), removed.at), victim); n > 0 {
		t.Errorf("%d new flows reached %s more than 200 ms after it was drained", n, victim)
	}
}

// `docker kill` gives no warning: flows to that replica may fail until the
// balancer removes it (on the kill/die events), none after, and flows held
// open to the other replicas never notice (connection tracking keeps them
// on their backend while the Maglev table is rebuilt without the victim).
func TestDockerKillOnlyVictimFlowsFail(t *testing.T) {
	e, webs := threeReplicas(t)
	victim := webs[1]

	// 24 long-lived TCP echo sessions spread over the three replicas.
	held := e.startProbe("-tcp="+e.lbIP+":9000", "-sessions=24", "-timeout=2s")
	sessionHost := map[string]string{}
	held.waitForLine(t, "HELD", 15*time.Second)
	for _, l := range held.otherLines() {
		f := strings.Fields(l)
		if len(f) == 3 && f[0] == "S" {
			sessionHost[f[1]] = f[2]
		}
	}
	perHost := map[string]int{}
	for _, h := range sessionHost {
		perHost[h]++
	}
	if len(sessionHost) != 24 || perHost[victim] == 0 || perHost[webs[0]]+perHost[webs[2]] == 0 {
		t.Fatalf("sessions: want 24 spread over the replicas, got %v (%v)", perHost, held.otherLines())
	}
	// They work before the kill.
	if res := held.ping(t); len(res.failed) > 0 {
		t.Fatalf("sessions failing before the kill: %v", res.failed)
	}

	p := e.startProbe(e.loadArgs()...)
	p.waitFor(t, "load on every replica", 10*time.Second, func(rs []rec) bool {
		return count(rs, webs[0]) > 20 && count(rs, webs[1]) > 20 && count(rs, webs[2]) > 20
	})
	mark := e.logs.mark()
	t0 := time.Now()
	e.h.Docker("kill", victim)
	removed := e.logs.waitFor(t, mark, "the killed replica removed", 10*time.Second, backendEvent("backend removed", victim))
	// A request to the dead replica waits for its 3 s timeout; let every
	// request started before the removal end, then some more load.
	time.Sleep(4 * time.Second)
	rs := p.stop(t)

	settled := removed.at.Add(500 * time.Millisecond)
	fails := failures(rs)
	window := between(rs, t0, removed.at)
	t.Logf("docker kill: removal logged %s after; %d of %d requests failed (%d started between the kill and the removal); load: %s",
		removed.at.Sub(t0).Round(time.Millisecond), len(fails), len(rs), len(window), summarize(rs))
	logFailures(t, rs, t0, "the kill")
	for _, r := range fails {
		if r.start.Add(r.dur).Before(t0) {
			t.Errorf("a request that ended before the kill failed: %+v", r)
		}
		if r.start.After(settled) {
			t.Errorf("a request started %s after the removal failed: %s", r.start.Sub(removed.at).Round(time.Millisecond), r.err)
		}
	}
	// Only the victim's share may fail: the other two keep answering
	// through the window.
	if len(fails) > 0 && len(window) > 0 && len(fails) > len(window)*2/3 {
		t.Errorf("%d failures among %d requests started between kill and removal: more than the victim's share", len(fails), len(window))
	}
	for _, w := range []string{webs[0], webs[2]} {
		if count(between(rs, t0, settled.Add(time.Second)), w) == 0 {
			t.Errorf("%s answered nothing right after the kill", w)
		}
	}
	if n := count(between(rs, settled, time.Now()), victim); n > 0 {
		t.Errorf("%d requests answered by the killed replica after its removal", n)
	}

	res := held.ping(t)
	for i, h := range sessionHost {
		_, failed := res.failed[i]
		switch {
		case h == victim && !failed:
			t.Errorf("session %s to the killed replica still echoes", i)
		case h != victim && failed:
			t.Errorf("session %s to the surviving %s broke: %s", i, h, res.failed[i])
		}
	}
	t.Logf("held sessions after the kill: %d to the victim failed, %d to the survivors still echo", perHost[victim], res.ok)
}

// An unhealthy replica gets no new flows; healthy again, it gets them again.
func TestUnhealthyGetsNoNewFlows(t *testing.T) {
	e, webs := threeReplicas(t)
	sick := webs[2]
	mark := e.logs.mark()
	e.h.Exec(sick, "/whoami", "sick")
	e.h.WaitHealth(sick, "unhealthy", 15*time.Second)
	e.logs.waitFor(t, mark, "the unhealthy replica drained", 5*time.Second, backendEvent("backend drained", sick))

	before := e.newFlows()
	r := e.whoamiClient(e.url(), 300, 10)
	after := e.newFlows()
	t.Logf("while %s is unhealthy:\n%s", sick, r.output)
	if r.failed != 0 {
		t.Errorf("%d requests failed while a replica was unhealthy", r.failed)
	}
	if r.byHost[sick] != 0 {
		t.Errorf("unhealthy %s answered %d requests", sick, r.byHost[sick])
	}
	if after[sick] != before[sick] {
		t.Errorf("metrics: %d new flows to unhealthy %s", after[sick]-before[sick], sick)
	}
	if _, ok := after[sick]; !ok {
		t.Errorf("metrics: unhealthy %s is no backend at all; want it kept, drained (its flows may finish)", sick)
	}
	for _, w := range webs[:2] {
		if r.byHost[w] == 0 || after[w] == before[w] {
			t.Errorf("healthy %s got no traffic (%d answers, %d new flows)", w, r.byHost[w], after[w]-before[w])
		}
	}

	mark = e.logs.mark()
	e.h.Exec(sick, "/whoami", "well")
	e.h.WaitHealth(sick, "healthy", 15*time.Second)
	e.logs.waitFor(t, mark, "the replica ready again", 5*time.Second, backendEvent("backend ready", sick))
	before = e.newFlows()
	r = e.whoamiClient(e.url(), 300, 10)
	after = e.newFlows()
	t.Logf("healthy again:\n%s", r.output)
	if r.failed != 0 {
		t.Errorf("%d requests failed after the replica recovered", r.failed)
	}
	if r.byHost[sick] == 0 || after[sick] == before[sick] {
		t.Errorf("recovered %s got no traffic (%d answers, %d new flows)", sick, r.byHost[sick], after[sick]-before[sick])
	}
}

// A replica disconnected from the network it shares with the balancer gets
// no more flows; connected again, with a new address, it gets them again.
// Meanwhile an unlabelled container takes over its old address: the
// balancer must not keep sending there.
func TestNetworkDisconnectReconnect(t *testing.T) {
	e, webs := threeReplicas(t)
	victim := webs[0]
	oldIP := e.h.IP(victim, e.net)

	p := e.startProbe(e.loadArgs()...)
	p.waitFor(t, "load on every replica", 10*time.Second, func(rs []rec) bool {
		return count(rs, webs[0]) > 20 && count(rs, webs[1]) > 20 && count(rs, webs[2]) > 20
	})
	mark := e.logs.mark()
	t0 := time.Now()
	e.h.Docker("network", "disconnect", e.net, victim)
	removed := e.logs.waitFor(t, mark, "the disconnected replica removed", 10*time.Second, backendEvent("backend removed", victim))
	time.Sleep(3500 * time.Millisecond) // requests sent to it before the removal time out (3 s)
	rs := p.stop(t)
	t.Logf("network disconnect: removal logged %s after; %d requests failed; load: %s",
		removed.at.Sub(t0).Round(time.Millisecond), len(failures(rs)), summarize(rs))
	logFailures(t, rs, t0, "the disconnect")
	for _, r := range failures(rs) {
		if r.start.After(removed.at.Add(500*time.Millisecond)) || r.start.Add(r.dur).Before(t0) {
			t.Errorf("request started %s after the disconnect failed, outside the disconnect..removal window", r.start.Sub(t0))
		}
	}
	if n := count(between(rs, removed.at, time.Now()), victim); n > 0 {
		t.Errorf("%d requests answered by %s after its removal", n, victim)
	}

	// The freed address goes to the next container Docker starts there.
	filler := e.plain("filler")
	r := e.whoamiClient(e.url(), 300, 10)
	t.Logf("after disconnect (%s now on %s):\n%s", filler, e.h.IP(filler, e.net), r.output)
	if r.failed != 0 {
		t.Errorf("%d requests failed after the replica was disconnected", r.failed)
	}
	if r.byHost[victim] != 0 || r.byHost[filler] != 0 {
		t.Errorf("disconnected %s answered %d, unlabelled %s %d requests", victim, r.byHost[victim], filler, r.byHost[filler])
	}
	if m := e.newFlows(); m[victim] != 0 {
		t.Errorf("metrics: disconnected %s still a backend with %d new flows", victim, m[victim])
	}
	for _, w := range webs[1:] {
		if r.byHost[w] == 0 {
			t.Errorf("%s got no traffic after the disconnect", w)
		}
	}

	mark = e.logs.mark()
	e.h.Docker("network", "connect", e.net, victim)
	added := e.logs.waitFor(t, mark, "the reconnected replica added", 10*time.Second, backendEvent("backend added", victim))
	newIP := e.h.IP(victim, e.net)
	t.Logf("reconnected %s: address %s (was %s); balancer: %s", victim, newIP, oldIP, added.text)
	if added.kv["ip"] != newIP {
		t.Errorf("balancer added %s at %s, Docker says %s", victim, added.kv["ip"], newIP)
	}
	e.waitServing(10*time.Second, victim)
	r = e.whoamiClient(e.url(), 300, 10)
	t.Logf("after reconnect:\n%s", r.output)
	if r.failed != 0 {
		t.Errorf("%d requests failed after the replica was reconnected", r.failed)
	}
	for _, w := range webs {
		if r.byHost[w] == 0 {
			t.Errorf("%s got no traffic after the reconnect", w)
		}
	}
	if r.byHost[filler] != 0 {
		t.Errorf("unlabelled %s (on the old address) answered %d requests", filler, r.byHost[filler])
	}
	if m := e.newFlows(); m[victim] == 0 {
		t.Errorf("metrics: no new flows to reconnected %s", victim)
	}
}

// logFailures logs the failed requests (the first ten), relative to t0.
func logFailures(t *testing.T, rs []rec, t0 time.Time, what string) {
	t.Helper()
	f := failures(rs)
	for i, r := range f {
		if i == 10 {
			t.Logf("... and %d more failed requests", len(f)-10)
			break
		}
		t.Logf("failed request started %s after %s: %s", r.start.Sub(t0).Round(time.Millisecond), what, r.err)
	}
}
