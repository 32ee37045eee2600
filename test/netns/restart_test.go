package netns_test

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A crashed xdplb leaves its program attached: the interface holds it. The
// next run must take over without --force, or xdplb could not come back
// after a crash without a human. A second xdplb while the first runs is
// someone else's program and must be refused.
func TestRestartAfterCrashAndSecondInstance(t *testing.T) {
	l := newLab(t)
	bin := binPath(t, "xdplb")
	run := func(name, httpAddr string) *Proc {
		return l.topo.Start(t, l.topo.LB, name, bin, "run", "--discovery=static", "--interface=eth0",
			"--service=web=80:8080/tcp", "--backend=web="+l.topo.Backends[0].IP.String(), "--http-addr="+httpAddr)
	}
	wantServing := func(who string) {
		t.Helper()
		hc := l.topo.Clients[0].HTTPClient(false, 2*time.Second)
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			var a answer
			if a, err = getWhoami(context.Background(), hc, fmt.Sprintf("http://%s/", l.vip)); err == nil {
				if a.Host != l.topo.Backends[0].Role {
					t.Fatalf("%s: answered by %q", who, a.Host)
				}
				return
			}
		}
		t.Fatalf("%s: VIP not served: %v", who, err)
	}
	xdpOnEth0 := func() string {
		out, _ := l.topo.LB.Exec(context.Background(), "ip", "-d", "link", "show", "eth0")
		return out
	}

	first := run("xdplb-1", "127.0.0.1:9181")
	if err := first.WaitOutput("ready: first sync applied", 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, first.Tail(20))
	}
	wantServing("first")

	second := run("xdplb-2", "127.0.0.1:9182")
	deadline := time.Now().Add(20 * time.Second)
	for done, _ := second.Exited(); !done; done, _ = second.Exited() {
		if time.Now().After(deadline) {
			t.Fatalf("a second instance attached next to a live one:\n%s", second.Tail(20))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := second.Exited(); err == nil || !strings.Contains(second.Output(), "refusing to replace") {
		t.Fatalf("second instance: exit %v, want a refusal naming the program:\n%s", err, second.Tail(10))
	}
	wantServing("first, after the refused second instance")

	if err := first.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for done, _ := first.Exited(); !done; done, _ = first.Exited() {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(xdpOnEth0(), "xdpgeneric") {
		t.Fatalf("SIGKILL detached the program; this test needs it left behind:\n%s", xdpOnEth0())
	}

	third := run("xdplb-3", "127.0.0.1:9183")
	if err := third.WaitOutput("ready: first sync applied", 30*time.Second); err != nil {
		t.Fatalf("restart after a crash: %v\n%s", err, third.Tail(20))
	}
	if !strings.Contains(third.Output(), "replacing an xdplb program a previous run left attached") {
		t.Fatalf("restart did not say it replaced the stale program:\n%s", third.Tail(20))
	}
	wantServing("restarted")

	// SIGTERM hands over (handover_test.go): the program stays attached
	// and keeps serving until the next instance replaces it.
	if !third.Stop(10 * time.Second) {
		t.Fatal("restarted instance did not stop on SIGTERM")
	}
	if !strings.Contains(xdpOnEth0(), "xdpgeneric") {
		t.Fatalf("SIGTERM with pinned state detached the program:\n%s", xdpOnEth0())
	}
	wantServing("the program the stopped instance left attached")
}
