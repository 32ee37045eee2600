package docker_test

import (
	"net"
	"strconv"
	"testing"
	"time"
)

// Only labelled containers get traffic: three labelled replicas and one
// unlabelled whoami on the same network; every labelled one answers through
// the balancer, the unlabelled one never does, and no request fails.
func TestLabelledGetTrafficUnlabelledNone(t *testing.T) {
	e := newEnv(t)
	webs := []string{e.backend("web1"), e.backend("web2"), e.backend("web3")}
	// Same image, same ports, same network: only the labels differ.
	stray := e.plain("stray")
	e.startLB()
	e.waitHealthy(append(webs, stray)...)
	e.waitServing(20*time.Second, webs...)

	before := e.newFlows()
	const n = 300
	// By the VIP address, then by the balancer's container name through
	// Docker's DNS, which is how Compose clients reach it.
	for _, url := range []string{e.url(), "http://" + e.lb + ":80/"} {
		r := e.whoamiClient(url, n, 10)
		t.Logf("%s:\n%s", url, r.output)
		if r.failed != 0 || r.ok != n {
			t.Errorf("%s: %d ok, %d failed of %d, want all ok", url, r.ok, r.failed, n)
		}
		for _, w := range webs {
			if r.byHost[w] == 0 {
				t.Errorf("%s: labelled replica %s never answered", url, w)
			}
		}
		if r.byHost[stray] != 0 {
			t.Errorf("%s: unlabelled container %s answered %d requests", url, stray, r.byHost[stray])
		}
		if r.byHost[e.client] != 0 {
			t.Errorf("%s: the client container itself answered %d requests", url, r.byHost[e.client])
		}
		for h := range r.byHost {
			if h != webs[0] && h != webs[1] && h != webs[2] {
				t.Errorf("%s: answer from unexpected replica %q", url, h)
			}
		}
	}

	// Full NAT: the replicas see the balancer as the client, from a port of
	// its SNAT range (1024-60999 by default: usually the client's own port),
	// not the client itself.
	p := e.startProbe("-url="+e.url(), "-workers=4", "-every=10ms", "-until-eof")
	p.waitFor(t, "100 answers", 20*time.Second, func(rs []rec) bool { return len(rs) >= 100 })
	for _, r := range p.stop(t) {
		if r.host == "" {
			t.Errorf("probe request failed: %s", r.err)
			continue
		}
		ip, port, err := net.SplitHostPort(r.remote)
		n, _ := strconv.Atoi(port)
		if err != nil || ip != e.lbIP || n < 1024 || n > 60999 {
			t.Errorf("%s saw the client as %q, want %s:1024-60999", r.host, r.remote, e.lbIP)
			break
		}
	}

	// XDP serves it, in generic mode on the container's veth; the balancer
	// has no socket on port 80 that could have answered instead.
	attached := e.logs.waitFor(t, 0, "xdp attached", time.Second, func(l logLine) bool {
		return l.kv["msg"] == "xdp attached" && l.kv["ip"] == e.lbIP
	})
	if attached.kv["mode"] != "generic" {
		t.Errorf("attached in mode %q on a veth, want generic: %s", attached.kv["mode"], attached.text)
	}

	// The data path's own count agrees: new flows went to the three
	// labelled backends, and the balancer has no backend for the stray.
	after := e.newFlows()
	var total uint64
	for _, w := range webs {
		d := after[w] - before[w]
		total += d
		if d == 0 {
			t.Errorf("metrics: no new flows counted for %s", w)
		}
	}
	if _, ok := after[stray]; ok {
		t.Errorf("metrics: the unlabelled %s is a backend", stray)
	}
	if total < 2*n {
		t.Errorf("metrics: %d new flows to the backends during %d requests, want at least that many", total, 2*n)
	}
}

// Scaling up under load: a new labelled replica gets new flows within
// seconds of `docker run`, and no request fails meanwhile.
func TestScaleUpUnderLoad(t *testing.T) {
	e := newEnv(t)
	webs := []string{e.backend("web1"), e.backend("web2")}
	e.startLB()
	e.waitHealthy(webs...)
	e.waitServing(20*time.Second, webs...)

	p := e.startProbe("-url="+e.url(), "-workers=4", "-every=20ms", "-until-eof")
	p.waitFor(t, "traffic on both replicas", 10*time.Second, func(rs []rec) bool {
		return count(rs, webs[0]) > 5 && count(rs, webs[1]) > 5
	})

	t0 := time.Now()
	web3 := e.backend("web3")
	var first time.Time
	p.waitFor(t, "the new replica answering", 15*time.Second, func(rs []rec) bool {
		for _, r := range rs {
			if r.host == web3 {
				first = r.start
				return true
			}
		}
		return false
	})
	// Keep the load on a little longer: the new replica keeps getting its
	// share, the old ones theirs.
	time.Sleep(1500 * time.Millisecond)
	rs := p.stop(t)
	t.Logf("new replica's first new flow %s after docker run (it must pass its 1 s HEALTHCHECK first); probe: %s",
		first.Sub(t0).Round(time.Millisecond), summarize(rs))
	if f := failures(rs); len(f) > 0 {
		t.Errorf("%d requests failed while scaling up: %s", len(f), summarize(f))
	}
	tail := between(rs, first.Add(500*time.Millisecond), time.Now())
	for _, w := range append(webs, web3) {
		if count(tail, w) == 0 {
			t.Errorf("%s got no new flows after the scale-up (%s)", w, summarize(tail))
		}
	}
	if m := e.newFlows(); m[web3] == 0 {
		t.Errorf("metrics: no new flows counted for the new replica %s", web3)
	}
}
