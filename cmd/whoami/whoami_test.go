package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newTestServer(t *testing.T, name string) *server {
	t.Helper()
	return &server{
		name:          name,
		unhealthyFile: filepath.Join(t.TempDir(), "unhealthy"),
		logger:        log.New(io.Discard, "", 0),
	}
}

// SplitMix64's published first outputs for seed 0; an independent check that
// the stream is the documented generator and not merely self-consistent.
func TestDataReaderIsSplitMix64(t *testing.T) {
	want := []uint64{0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, 0x06c45d188009454f}
	b, err := io.ReadAll(newDataReader(24))
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		if got := binary.LittleEndian.Uint64(b[8*i:]); got != w {
			t.Errorf("word %d = %#x, want %#x", i, got, w)
		}
	}
}

// Odd read sizes cross word boundaries; the bytes must not depend on them.
func TestDataReaderChunkingInvariant(t *testing.T) {
	const size = 100003
	whole, _ := io.ReadAll(newDataReader(size))
	if len(whole) != size {
		t.Fatalf("len %d, want %d", len(whole), size)
	}
	for _, chunk := range []int{1, 3, 7, 8, 9, 4095} {
		var got []byte
		r := newDataReader(size)
		buf := make([]byte, chunk)
		for {
			n, err := r.Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
		}
		if !bytes.Equal(got, whole) {
			t.Errorf("chunk %d: stream differs", chunk)
		}
	}
}

func TestVerifyData(t *testing.T) {
	good, _ := io.ReadAll(newDataReader(5000))
	if err := verifyData(bytes.NewReader(good), 5000); err != nil {
		t.Fatalf("intact stream: %v", err)
	}
	bad := bytes.Clone(good)
	bad[4321] ^= 0x10
	if err := verifyData(bytes.NewReader(bad), 5000); err == nil || !strings.Contains(err.Error(), "offset 4321") {
		t.Errorf("flipped bit: err = %v, want a mismatch at offset 4321", err)
	}
	if err := verifyData(bytes.NewReader(good[:4999]), 5000); err == nil {
		t.Error("truncated stream verified")
	}
	if err := verifyData(bytes.NewReader(append(bytes.Clone(good), 0)), 5000); err == nil {
		t.Error("over-long stream verified")
	}
	// A periodic pattern would pass this: a segment shifted by one word.
	shifted := append(bytes.Clone(good[:8]), good[:4992]...)
	if err := verifyData(bytes.NewReader(shifted), 5000); err == nil {
		t.Error("shifted stream verified")
	}
}

func TestRootNamesReplicaAndAddresses(t *testing.T) {
	s := newTestServer(t, "replica-a")
	ts := httptest.NewServer(s.handler())
	defer ts.Close()
	resp, err := http.Get(ts.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// The server must report its own side's address and the peer's.
	re := regexp.MustCompile(`^hostname replica-a\naddr 127\.0\.0\.1:(\d+)\nremote 127\.0\.0\.1:\d+\n$`)
	m := re.FindStringSubmatch(string(body))
	if m == nil {
		t.Fatalf("body %q does not match %s", body, re)
	}
	if want := ts.Listener.Addr().(*net.TCPAddr).Port; m[1] != fmt.Sprint(want) {
		t.Errorf("addr port %s, want %d", m[1], want)
	}
	if h := resp.Header.Get(hostnameHeader); h != "replica-a" {
		t.Errorf("%s = %q", hostnameHeader, h)
	}
	if resp, _ := http.Get(ts.URL + "/nope"); resp.StatusCode != 404 {
		t.Errorf("/nope status %d, want 404", resp.StatusCode)
	}
}

func TestHealthFollowsToggleFile(t *testing.T) {
	s := newTestServer(t, "h")
	ts := httptest.NewServer(s.handler())
	defer ts.Close()
	status := func() int {
		resp, err := http.Get(ts.URL + "/health")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	check := func() int { return cmdCheck([]string{"--url=" + ts.URL + "/health"}, io.Discard) }
	if got := status(); got != 200 {
		t.Fatalf("healthy: %d", got)
	}
	if got := check(); got != 0 {
		t.Errorf("check on healthy: exit %d", got)
	}
	if code := cmdSick([]string{"--unhealthy-file=" + s.unhealthyFile}, io.Discard); code != 0 {
		t.Fatalf("sick: exit %d", code)
	}
	if got := status(); got != 503 {
		t.Errorf("after sick: %d, want 503", got)
	}
	if got := check(); got != 1 {
		t.Errorf("check on unhealthy: exit %d, want 1", got)
	}
	for i := 0; i < 2; i++ { // well is idempotent
		if code := cmdWell([]string{"--unhealthy-file=" + s.unhealthyFile}, io.Discard); code != 0 {
			t.Fatalf("well: exit %d", code)
		}
	}
	if got := status(); got != 200 {
		t.Errorf("after well: %d", got)
	}
}

func TestSickCreatesMissingDirectory(t *testing.T) {
	f := filepath.Join(t.TempDir(), "tmp", "whoami-unhealthy")
	if code := cmdSick([]string{"--unhealthy-file=" + f}, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if _, err := os.Stat(f); err != nil {
		t.Fatal(err)
	}
}

func TestCheckFailsWhenNothingListens(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	if code := cmdCheck([]string{"--url=http://" + addr + "/health", "--timeout=1s"}, io.Discard); code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
}

func TestDataEndpoint(t *testing.T) {
	ts := httptest.NewServer(newTestServer(t, "d").handler())
	defer ts.Close()
	for _, size := range []int64{0, 1, 13, 1 << 20} {
		resp, err := http.Get(fmt.Sprintf("%s/data?size=%d", ts.URL, size))
		if err != nil {
			t.Fatal(err)
		}
		if resp.ContentLength != size {
			t.Errorf("size %d: Content-Length %d", size, resp.ContentLength)
		}
		if err := verifyData(resp.Body, size); err != nil {
			t.Errorf("size %d: %v", size, err)
		}
		resp.Body.Close()
	}
	for _, q := range []string{"", "size=-1", "size=abc", fmt.Sprintf("size=%d", int64(maxDataSize)+1)} {
		resp, err := http.Get(ts.URL + "/data?" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("%q: status %d, want 400", q, resp.StatusCode)
		}
	}
}

// The `data` command is how shell tests get the expected hash; it must be the
// same stream the server sends.
func TestDataCommandMatchesEndpoint(t *testing.T) {
	var out bytes.Buffer
	if code := cmdData([]string{"--size=70001"}, &out, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if err := verifyData(&out, 70001); err != nil {
		t.Fatal(err)
	}
	if code := cmdData(nil, io.Discard, io.Discard); code != 2 {
		t.Errorf("no --size: exit %d, want 2", code)
	}
}

func TestSinkHashesBody(t *testing.T) {
	ts := httptest.NewServer(newTestServer(t, "s").handler())
	defer ts.Close()
	body := bytes.Repeat([]byte("xdplb"), 300001)
	resp, err := http.Post(ts.URL+"/sink", "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := fmt.Sprintf("bytes %d\nsha256 %x\n", len(body), sha256.Sum256(body))
	if string(got) != want {
		t.Errorf("sink answered %q, want %q", got, want)
	}
	if resp, _ := http.Get(ts.URL + "/sink"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /sink: status %d, want 405", resp.StatusCode)
	}
}

// startServe runs the real listeners on loopback ports and returns their addresses.
func startServe(t *testing.T, name string) (httpAddr, tcpAddr, udpAddr string) {
	t.Helper()
	s := newTestServer(t, name)
	hl, _ := net.Listen("tcp", "127.0.0.1:0")
	tl, _ := net.Listen("tcp", "127.0.0.1:0")
	ul, _ := net.ListenPacket("udp", "127.0.0.1:0")
	httpAddr, tcpAddr, udpAddr = hl.Addr().String(), tl.Addr().String(), ul.LocalAddr().String()
	// Release and rebind through listenAndServe, the code path `serve` uses.
	hl.Close()
	tl.Close()
	ul.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.listenAndServe(ctx, 0, httpAddr, tcpAddr, udpAddr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("serve did not stop within 5s of cancel")
		}
	})
	waitListening(t, httpAddr)
	return
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s never listened", addr)
}

func TestTCPGreetsThenEchoes(t *testing.T) {
	_, tcpAddr, _ := startServe(t, "tcp-replica")
	c, err := net.Dial("tcp", tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	if l, _ := r.ReadString('\n'); l != "hostname tcp-replica\n" {
		t.Fatalf("greeting %q", l)
	}
	for _, l := range []string{"one\n", "two two\n"} {
		io.WriteString(c, l)
		if got, _ := r.ReadString('\n'); got != l {
			t.Errorf("echo %q, want %q", got, l)
		}
	}
}

func TestUDPPrefixesName(t *testing.T) {
	_, _, udpAddr := startServe(t, "udp-replica")
	c, err := net.Dial("udp", udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "hello world")
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:n]); got != "hostname udp-replica hello world" {
		t.Errorf("reply %q", got)
	}
}

func TestServeRefusesBusyPort(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	s := newTestServer(t, "x")
	err := s.listenAndServe(context.Background(), 0, ln.Addr().String(), "", "")
	if err == nil || !strings.Contains(err.Error(), "http listen") {
		t.Errorf("err = %v, want an http listen error", err)
	}
}

// runClient drives the client command end to end and returns its exit code
// and output.
func runClient(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := cmdClient(context.Background(), args, &out, &out)
	return code, out.String()
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	return lines[len(lines)-1] + "\n"
}

func TestClientModesAgainstServer(t *testing.T) {
	httpAddr, tcpAddr, udpAddr := startServe(t, "only")
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"get", []string{"--url=http://" + httpAddr + "/"}},
		{"data", []string{"--url=http://" + httpAddr + "/", "--data=300000"}},
		{"upload", []string{"--url=http://" + httpAddr + "/", "--upload=300000"}},
		{"keepalive", []string{"--url=http://" + httpAddr + "/", "--keepalive"}},
		{"tcp", []string{"--tcp=" + tcpAddr}},
		{"udp", []string{"--udp=" + udpAddr}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runClient(t, append(tc.args, "--n=40", "--concurrency=7")...)
			if code != 0 {
				t.Fatalf("exit %d:\n%s", code, out)
			}
			if got := lastLine(out); got != "requests 40 ok 40 failed 0\n" {
				t.Errorf("summary %q\n%s", got, out)
			}
			if !regexp.MustCompile(`(?m)^only +40 +100\.0%$`).MatchString(out) {
				t.Errorf("no table row for replica 'only':\n%s", out)
			}
		})
	}
}

// Two replicas behind a trivial round-robin front prove the table counts
// each replica separately.
func TestClientCountsPerReplica(t *testing.T) {
	a := httptest.NewServer(newTestServer(t, "alpha").handler())
	defer a.Close()
	b := httptest.NewServer(newTestServer(t, "beta").handler())
	defer b.Close()
	backends := []*httptest.Server{a, b}
	var next atomic.Int64
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		be := backends[next.Add(1)%2]
		resp, err := http.Get(be.URL + r.URL.Path)
		if err != nil {
			http.Error(w, err.Error(), 502)
			return
		}
		defer resp.Body.Close()
		io.Copy(w, resp.Body)
	}))
	defer front.Close()
	code, out := runClient(t, "--url="+front.URL+"/", "--n=10", "--concurrency=1")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for _, row := range []string{`(?m)^alpha +5 +50\.0%$`, `(?m)^beta +5 +50\.0%$`} {
		if !regexp.MustCompile(row).MatchString(out) {
			t.Errorf("missing row %s in:\n%s", row, out)
		}
	}
}

func TestClientReportsFailures(t *testing.T) {
	// A server that answers 503 half the time.
	var n atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%2 == 0 {
			http.Error(w, "nope", 503)
			return
		}
		fmt.Fprint(w, "hostname flaky\n")
	}))
	defer ts.Close()
	code, out := runClient(t, "--url="+ts.URL+"/", "--n=10", "--concurrency=1")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if got := lastLine(out); got != "requests 10 ok 5 failed 5\n" {
		t.Errorf("summary %q\n%s", got, out)
	}
	if !strings.Contains(out, "5 x GET") || !strings.Contains(out, "503") {
		t.Errorf("errors not listed:\n%s", out)
	}

	// Nothing listening at all: every UDP request times out and fails.
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	silent := pc.LocalAddr().String() // bound but never answers
	defer pc.Close()
	code, out = runClient(t, "--udp="+silent, "--n=3", "--timeout=300ms")
	if code != 1 || lastLine(out) != "requests 3 ok 0 failed 3\n" {
		t.Errorf("silent udp: exit %d\n%s", code, out)
	}
}

func TestClientDetectsCorruptData(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(newDataReader(1000))
		b[500]++
		w.Header().Set(hostnameHeader, "liar")
		w.Write(b)
	}))
	defer ts.Close()
	code, out := runClient(t, "--url="+ts.URL+"/", "--data=1000", "--n=2")
	if code != 1 || !strings.Contains(out, "offset 500") {
		t.Errorf("exit %d, want 1 and a mismatch at offset 500:\n%s", code, out)
	}
}

func TestClientRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--tcp=a:1", "--udp=a:2"},
		{"--udp=a:1", "--data=10"},
		{"--data=1", "--upload=1"},
		{"--url=ftp://x/"},
		{"--concurrency=0"},
	} {
		if code, out := runClient(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2\n%s", args, code, out)
		}
	}
}

func TestRunDispatch(t *testing.T) {
	if code := run(nil, io.Discard, io.Discard); code != 2 {
		t.Errorf("no command: exit %d", code)
	}
	if code := run([]string{"bogus"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("unknown command: exit %d", code)
	}
	var out bytes.Buffer
	if code := run([]string{"help"}, &out, io.Discard); code != 0 || !strings.Contains(out.String(), "client") {
		t.Errorf("help: exit %d %q", code, out.String())
	}
}

// Repeat mode prints a table per round and stops cleanly when cancelled.
func TestClientEveryRepeatsUntilCancelled(t *testing.T) {
	httpAddr, _, _ := startServe(t, "loop")
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- cmdClient(ctx, []string{"--url=http://" + httpAddr + "/", "--n=5", "--every=50ms"}, &out, &out)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(out.String(), "requests 5 ok 5 failed 0\n") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 3 rounds in 5s:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d after cancel", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("client did not stop after cancel")
	}
	if !strings.Contains(out.String(), "round 3 at ") {
		t.Errorf("rounds not numbered:\n%s", out.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// After the stop signal a lame duck keeps answering, but tells health checks
// it is going, so the balancer drains it before its listeners close.
func TestServeLameDuckKeepsServingWithHealthFailing(t *testing.T) {
	s := newTestServer(t, "duck")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.listenAndServe(ctx, 700*time.Millisecond, addr, "", "") }()
	waitListening(t, addr)
	get := func(path string) int {
		c := http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get("http://" + addr + path)
		if err != nil {
			return -1
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("/health"); code != 200 {
		t.Fatalf("health before stop = %d", code)
	}
	stopped := time.Now()
	cancel()
	time.Sleep(100 * time.Millisecond)
	if code := get("/"); code != 200 {
		t.Fatalf("GET / during the lame-duck period = %d, want 200", code)
	}
	if code := get("/health"); code != http.StatusServiceUnavailable {
		t.Fatalf("health during the lame-duck period = %d, want 503", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(stopped); d < 600*time.Millisecond {
			t.Fatalf("stopped after %s, before the 700ms delay", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not stop")
	}
	if code := get("/"); code != -1 {
		t.Fatalf("still serving after shutdown: %d", code)
	}
}
