//go:build figures

// Path figures are a measurement, not a check: they build only with
// `-tags figures` (XDPLB_FIGURES=N rounds), so that the test command
// never skips them.

package netns_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPathFigures measures every path of the two-network topology in one
// run: keep-alive requests/s and new connections/s (wrk, from both clients
// at once) and 100 MB each way (verified), in one network and across two,
// in rounds that rotate the order of the paths; it logs medians as ratios
// to direct. Opt-in, as it takes minutes: XDPLB_FIGURES=N rounds (3 gives
// a median). XDPLB_BASE_BIN=path/to/xdplb adds that binary as path
// "before" (in XDPLB_BASE_MODE, generic by default), for a comparison with
// an earlier build. Backends keep no TIME_WAIT sockets here (see below), so
// the figures leave out the PAWS losses that SNAT port reuse meets on a
// busy backend. Fails
// when a request fails or a transfer is wrong on any path but "before".
func TestPathFigures(t *testing.T) {
	rounds, err := strconv.Atoi(os.Getenv("XDPLB_FIGURES"))
	if err != nil || rounds < 1 {
		t.Fatal("set XDPLB_FIGURES=N (rounds; 3 gives a median) to measure")
	}
	tn := newTwoNet(t, 2, 1500)
	paths := []path{tn.directPath(), tn.iptablesPath(), tn.xdplbPath("generic"), tn.xdplbPath("native")}
	if base := os.Getenv("XDPLB_BASE_BIN"); base != "" {
		mode := os.Getenv("XDPLB_BASE_MODE")
		if mode == "" {
			mode = "generic"
		}
		p := tn.xdplbPathPorts(mode, "10000-32767")
		p.name = "before"
		up := p.up
		p.up = func(t *testing.T) (string, string) {
			t.Setenv("XDPLB_BIN_DIR", strings.TrimSuffix(base, "/xdplb"))
			return up(t)
		}
		paths = append(paths, p)
	}
	tn.applyOffloads(t, offloadModes[0])
	// No TIME_WAIT on the backends: every path maps new connections onto
	// the same few backend endpoints, and a SYN that meets the TIME_WAIT
	// socket of an earlier path's connection is lost to PAWS about half the
	// time (a 1 s retransmission), which would measure the order of the
	// paths, not the paths.
	for _, b := range append([]*Node{tn.b0}, tn.topo.Backends...) {
		tn.topo.nsExec(t, b.NS, "sysctl", "-qw", "net.ipv4.tcp_max_tw_buckets=0")
	}
	samples := map[string][]pathFigures{}
	for r := 0; r < rounds; r++ {
		for i := range paths {
			p := paths[(i+r)%len(paths)]
			t.Run(fmt.Sprintf("round%d/%s", r+1, p.name), func(t *testing.T) {
				one, two := p.up(t)
				defer p.down(t)
				var f pathFigures
				var bad int
				f.ka2, f.nc2, bad = wrkRates(t, tn.topo.Clients, two)
				if bad > 0 && p.name != "before" {
					t.Errorf("%s two networks: %d wrk errors", p.name, bad)
				}
				f.ka1, f.nc1, bad = wrkRates(t, tn.topo.Clients, one)
				if bad > 0 && p.name != "before" {
					t.Errorf("%s one network: %d wrk errors", p.name, bad)
				}
				f.down2, f.up2 = bulkOrZero(t, tn.topo.Clients[0], p.name != "before", two)
				f.down1, f.up1 = bulkOrZero(t, tn.topo.Clients[0], p.name != "before", one)
				samples[p.name] = append(samples[p.name], f)
			})
		}
	}
	med := map[string]pathFigures{}
	for name, fs := range samples {
		pick := func(get func(pathFigures) float64) float64 {
			v := make([]float64, len(fs))
			for i, f := range fs {
				v[i] = get(f)
			}
			sort.Float64s(v)
			return v[len(v)/2]
		}
		med[name] = pathFigures{
			down1: pick(func(f pathFigures) float64 { return f.down1 }), up1: pick(func(f pathFigures) float64 { return f.up1 }),
			down2: pick(func(f pathFigures) float64 { return f.down2 }), up2: pick(func(f pathFigures) float64 { return f.up2 }),
			ka1: pick(func(f pathFigures) float64 { return f.ka1 }), nc1: pick(func(f pathFigures) float64 { return f.nc1 }),
			ka2: pick(func(f pathFigures) float64 { return f.ka2 }), nc2: pick(func(f pathFigures) float64 { return f.nc2 }),
		}
	}
	t.Logf("medians of %d rounds", rounds)
	logRatios(t, med)
}

var wrkRPS = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
var wrkErrors = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)|Non-2xx or 3xx responses: (\d+)`)

// wrkRates runs wrk from every client at once for 3 s with keep-alive,
// then 3 s with "Connection: close" (a new connection per request), and
// returns the summed requests/s and the errors wrk reported.
func wrkRates(t *testing.T, clients []*Node, url string) (keepAlive, newConn float64, errs int) {
	t.Helper()
	run := func(extra ...string) float64 {
		type res struct {
			out string
			err error
		}
		ch := make(chan res, len(clients))
		for _, c := range clients {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				args := append([]string{"-t1", "-c8", "-d3s", "--timeout", "2s"}, extra...)
				out, err := c.Exec(ctx, "wrk", append(args, url)...)
				ch <- res{out, err}
			}()
		}
		var sum float64
		for range clients {
			r := <-ch
			if r.err != nil {
				t.Errorf("wrk: %v", r.err)
				continue
			}
			m := wrkRPS.FindStringSubmatch(r.out)
			if m == nil {
				t.Errorf("wrk printed no rate:\n%s", r.out)
				continue
			}
			v, _ := strconv.ParseFloat(m[1], 64)
			sum += v
			for _, e := range wrkErrors.FindAllStringSubmatch(r.out, -1) {
				for _, n := range e[1:] {
					k, _ := strconv.Atoi(n)
					errs += k
				}
			}
		}
		return sum
	}
	return run(), run("-H", "Connection: close"), errs
}

// bulkOrZero is bulk, except that for a path allowed to fail it reports a
// failed transfer as 0 MB/s instead of failing the test.
func bulkOrZero(t *testing.T, c *Node, mustWork bool, base string) (down, up float64) {
	t.Helper()
	if mustWork {
		return bulk(t, c, "figures", base)
	}
	hc := c.HTTPClient(false, 20*time.Second)
	if _, d, err := download(context.Background(), hc, base, transferSize); err == nil {
		down = d
	} else {
		t.Logf("before: download failed: %v", err)
	}
	if _, u, err := upload(context.Background(), hc, base, transferSize); err == nil {
		up = u
	} else {
		t.Logf("before: upload failed: %v", err)
	}
	return down, up
}
