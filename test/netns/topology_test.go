package netns_test

// The test topology: one switch namespace holding a Linux bridge, and one
// namespace per host (clients, the load balancer, backends), each with an
// eth0 veth'd into the bridge. Every name carries a per-run prefix, every
// address lives only in namespaces the test created, and the root namespace is
// never touched, so runs (and other engineers' tests) cannot collide.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	nsPrefix   = "xlbt-"    // every namespace this package creates starts with it
	subnet     = "10.211.0" // a private /24 that exists only inside the test namespaces
	subnetBits = 24
	netnsDir   = "/run/netns" // where `ip netns add` mounts named namespaces
)

// Node is one host of the topology: a namespace with eth0 on the bridge.
type Node struct {
	Role string // "c1", "lb", "b2": also the bridge port's name in the switch namespace
	NS   string // the namespace's name (under /run/netns)
	IP   netip.Addr
	MAC  net.HardwareAddr
	nsf  *os.File // held open so goroutines can setns into it
}

// Topology is the whole test network.
type Topology struct {
	Prefix   string
	Switch   string // the switch namespace, holding bridge br0 and the host ports
	Clients  []*Node
	LB       *Node
	Backends []*Node

	sw    *Node // the switch namespace, for Do
	mu    sync.Mutex
	nodes []*Node
	procs []*Proc
}

// newTopology builds the network and registers its teardown with t.
// Addresses: LB .2, clients .11.., backends .21..; MACs 02:11:00:00:00:<last octet>.
func newTopology(t *testing.T, clients, backends int) *Topology {
	t.Helper()
	requireRoot(t)
	sweepStaleNamespaces(t)
	var rnd [3]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	// The pid lets a later run tell a leftover of a dead run from a live one.
	topo := &Topology{Prefix: fmt.Sprintf("%s%d-%s-", nsPrefix, os.Getpid(), hex.EncodeToString(rnd[:]))}
	topo.Switch = topo.Prefix + "sw"
	t.Cleanup(func() { topo.destroy(t) })

	mustRun(t, "ip", "netns", "add", topo.Switch)
	swf, err := os.Open(filepath.Join(netnsDir, topo.Switch))
	if err != nil {
		t.Fatalf("opening namespace %s: %v", topo.Switch, err)
	}
	topo.sw = &Node{Role: "sw", NS: topo.Switch, nsf: swf}
	topo.nsExec(t, topo.Switch, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	mustRun(t, "ip", "-n", topo.Switch, "link", "set", "lo", "up")
	// No STP and no forwarding delay: ports forward the moment they are up.
	mustRun(t, "ip", "-n", topo.Switch, "link", "add", "br0", "type", "bridge",
		"stp_state", "0", "forward_delay", "0", "mcast_snooping", "0")
	mustRun(t, "ip", "-n", topo.Switch, "link", "set", "br0", "up")

	topo.LB = topo.addNode(t, "lb", 2)
	for i := 0; i < clients; i++ {
		topo.Clients = append(topo.Clients, topo.addNode(t, fmt.Sprintf("c%d", i+1), 11+i))
	}
	for i := 0; i < backends; i++ {
		topo.Backends = append(topo.Backends, topo.addNode(t, fmt.Sprintf("b%d", i+1), 21+i))
	}
	return topo
}

func (topo *Topology) addNode(t *testing.T, role string, octet int) *Node {
	t.Helper()
	n := &Node{
		Role: role,
		NS:   topo.Prefix + role,
		IP:   netip.MustParseAddr(fmt.Sprintf("%s.%d", subnet, octet)),
		MAC:  net.HardwareAddr{0x02, 0x11, 0, 0, 0, byte(octet)},
	}
	mustRun(t, "ip", "netns", "add", n.NS)
	f, err := os.Open(filepath.Join(netnsDir, n.NS))
	if err != nil {
		t.Fatalf("opening namespace %s: %v", n.NS, err)
	}
	n.nsf = f
	topo.mu.Lock()
	topo.nodes = append(topo.nodes, n)
	topo.mu.Unlock()

	// IPv6 off: router solicitations and DAD would only add noise to the counters.
	topo.nsExec(t, n.NS, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	mustRun(t, "ip", "-n", n.NS, "link", "set", "lo", "up")
	// Created in the switch namespace with the host end moved straight into
	// the host's namespace: the interface never exists in the root namespace.
	mustRun(t, "ip", "-n", topo.Switch, "link", "add", role, "type", "veth", "peer", "name", "eth0", "netns", n.NS)
	mustRun(t, "ip", "-n", n.NS, "link", "set", "eth0", "address", n.MAC.String())
	mustRun(t, "ip", "-n", n.NS, "addr", "add", fmt.Sprintf("%s/%d", n.IP, subnetBits), "dev", "eth0")
	mustRun(t, "ip", "-n", n.NS, "link", "set", "eth0", "up")
	mustRun(t, "ip", "-n", topo.Switch, "link", "set", role, "master", "br0")
	mustRun(t, "ip", "-n", topo.Switch, "link", "set", role, "up")
	return n
}

// Nodes lists every host node.
func (topo *Topology) Nodes() []*Node {
	topo.mu.Lock()
	defer topo.mu.Unlock()
	return append([]*Node(nil), topo.nodes...)
}

// destroy stops every process and deletes every namespace of this topology.
// Deleting a namespace deletes its veth ends, and with them the peers.
func (topo *Topology) destroy(t *testing.T) {
	topo.mu.Lock()
	procs := append([]*Proc(nil), topo.procs...)
	nodes := append([]*Node(nil), topo.nodes...)
	topo.mu.Unlock()
	for _, p := range procs {
		p.Stop(5 * time.Second)
		if t.Failed() {
			t.Logf("--- output of %s (last 60 lines) ---\n%s", p.Name, p.Tail(60))
		}
	}
	if topo.sw != nil {
		nodes = append(nodes, topo.sw)
	}
	for _, n := range nodes {
		if n.nsf != nil {
			n.nsf.Close()
		}
	}
	for _, name := range nsNames(nodes) {
		if err := deleteNamespace(name); err != nil {
			t.Errorf("teardown: %v", err)
		}
	}
}

func nsNames(nodes []*Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.NS)
	}
	return out
}

// deleteNamespace kills what still runs inside a namespace of ours (only
// processes the test started can be there) and deletes it.
func deleteNamespace(name string) error {
	if _, err := os.Stat(filepath.Join(netnsDir, name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if out, err := exec.Command("ip", "netns", "pids", name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			// Never ourselves: our own threads visit these namespaces.
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", name, err, bytes.TrimSpace(out))
	}
	return nil
}

// sweepStaleNamespaces deletes namespaces left by a run of this package that
// was killed before its cleanup ran (its pid, in the name, is gone).
func sweepStaleNamespaces(t *testing.T) {
	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), nsPrefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // a live run, maybe a concurrent one: not ours to touch
		}
		t.Logf("deleting stale namespace %s of dead run %d", e.Name(), pid)
		if err := deleteNamespace(e.Name()); err != nil {
			t.Logf("stale namespace: %v", err)
		}
	}
}

// Keep the main goroutine on the main thread for good. A goroutine that
// exits while locked ends its thread, except the main thread, which the
// runtime wedges instead; had Do ever run there, the whole process would look
// as if it lived in a test namespace (/proc/PID/ns/net is the main thread's).
func init() { runtime.LockOSThread() }

// Do runs f on an OS thread that has joined the node's namespace. Sockets
// created by f belong to that namespace for life and can be used from any
// goroutine afterwards. The thread is never unlocked: it exits with the
// goroutine, so no other goroutine can ever run in the foreign namespace.
func (n *Node) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(int(n.nsf.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", n.NS, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// DialContext dials from inside the node's namespace. addr must be an IP
// literal: a name lookup could hop to another goroutine and namespace.
func (n *Node) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var err error
		// Bounded: a black-holed SYN would otherwise retry for two minutes.
		c, err = (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// ListenPacket opens a datagram socket inside the node's namespace.
func (n *Node) ListenPacket(network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := n.Do(func() error {
		var err error
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// Listen opens a stream listener inside the node's namespace.
func (n *Node) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.Do(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// HTTPClient sends from the node. Without keep-alive every request is a new
// TCP connection, hence a new flow for the balancer.
func (n *Node) HTTPClient(keepAlive bool, timeout time.Duration) *http.Client {
	tr := &http.Transport{
		DialContext:         n.DialContext,
		DisableKeepAlives:   !keepAlive,
		MaxIdleConnsPerHost: 64,
		DisableCompression:  true,
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// SNMP reads the node's /proc/net/snmp as "Proto.Field" -> value.
func (n *Node) SNMP() (map[string]int64, error) { return n.procNetCounters("snmp") }

// Netstat reads the node's /proc/net/netstat ("TcpExt.PAWSTimewait" and
// the like) the same way: nstat's TcpExt counters, of this namespace only.
func (n *Node) Netstat() (map[string]int64, error) { return n.procNetCounters("netstat") }

// procNetCounters parses a /proc/net file of header/value line pairs.
func (n *Node) procNetCounters(file string) (map[string]int64, error) {
	var raw []byte
	err := n.Do(func() error {
		var err error
		// thread-self: /proc/net follows the thread group leader's namespace.
		raw, err = os.ReadFile("/proc/thread-self/net/" + file)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	var header []string
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		if _, err := strconv.ParseInt(f[1], 10, 64); err != nil {
			header = f
			continue
		}
		if len(header) != len(f) || header[0] != f[0] {
			continue
		}
		proto := strings.TrimSuffix(f[0], ":")
		for i := 1; i < len(f); i++ {
			v, _ := strconv.ParseInt(f[i], 10, 64)
			out[proto+"."+header[i]] = v
		}
	}
	return out, sc.Err()
}

// Exec runs a command inside the node's namespace.
func (n *Node) Exec(ctx context.Context, name string, args ...string) (string, error) {
	return runCmd(ctx, "ip", append([]string{"netns", "exec", n.NS, name}, args...)...)
}

func (topo *Topology) nsExec(t *testing.T, ns string, name string, args ...string) string {
	t.Helper()
	return mustRun(t, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// Offloads is a checksum-offload setting: tx (the sender leaves a partial
// checksum for the "hardware") and rx (the receiver trusts the "hardware").
type Offloads struct{ TX, RX bool }

// OffloadMode says how every interface of the topology is set.
type OffloadMode struct {
	Name            string
	Client, Backend Offloads // eth0 of the clients, of the backends
	LB              Offloads // eth0 of the load balancer
	LBPort          Offloads // the bridge port facing the load balancer
	HostPort        Offloads // the bridge ports facing clients and backends
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// ApplyOffloads sets tx/rx checksum offload on both ends of every veth and
// reads the result back, so a setting that did not take fails the test
// instead of silently testing something else.
func (topo *Topology) ApplyOffloads(t *testing.T, m OffloadMode) {
	t.Helper()
	for _, c := range topo.Clients {
		topo.SetOffloads(t, c.NS, "eth0", m.Client)
		topo.SetOffloads(t, topo.Switch, c.Role, m.HostPort)
	}
	for _, b := range topo.Backends {
		topo.SetOffloads(t, b.NS, "eth0", m.Backend)
		topo.SetOffloads(t, topo.Switch, b.Role, m.HostPort)
	}
	topo.SetOffloads(t, topo.LB.NS, "eth0", m.LB)
	topo.SetOffloads(t, topo.Switch, topo.LB.Role, m.LBPort)
}

// SetOffloads sets tx/rx checksum offload of one interface and reads it back.
func (topo *Topology) SetOffloads(t *testing.T, ns, dev string, o Offloads) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// ethtool exits non-zero when nothing changes; the read-back below is the check.
	_, _ = runCmd(ctx, "ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", onOff(o.TX), "rx", onOff(o.RX))
	got, err := runCmd(ctx, "ip", "netns", "exec", ns, "ethtool", "-k", dev)
	if err != nil {
		t.Fatalf("ethtool -k %s in %s: %v", dev, ns, err)
	}
	for feat, want := range map[string]bool{"tx-checksumming": o.TX, "rx-checksumming": o.RX} {
		if !strings.Contains(got, feat+": "+onOff(want)) {
			t.Fatalf("%s in %s: %s is not %s after ethtool -K:\n%s", dev, ns, feat, onOff(want), got)
		}
	}
}

// AttachPassXDPToLBPeer attaches a native XDP program that passes
// everything to the switch's port facing the load balancer. On a veth,
// frames another program sends back with XDP_TX land in the peer's XDP ring,
// and that ring is only flushed when the peer itself runs XDP: with merely
// GRO on (NAPI, but no program) they wait there until unrelated traffic
// schedules the peer's NAPI (verified on kernel 6.18).
func (topo *Topology) AttachPassXDPToLBPeer(t *testing.T) {
	t.Helper()
	fd, err := loadPassXDP()
	if err != nil {
		t.Fatalf("loading an XDP_PASS program: %v", err)
	}
	defer unix.Close(fd)
	err = topo.sw.Do(func() error {
		link, err := netlink.LinkByName(topo.LB.Role)
		if err != nil {
			return err
		}
		return netlink.LinkSetXdpFdWithFlags(link, fd, unix.XDP_FLAGS_DRV_MODE)
	})
	if err != nil {
		t.Fatalf("attaching XDP_PASS to %s in %s: %v", topo.LB.Role, topo.Switch, err)
	}
}

// loadPassXDP loads "r0 = XDP_PASS; exit" with the bare bpf(2) syscall: two
// instructions do not justify an object file or a loader library.
func loadPassXDP() (int, error) {
	insns := [2]uint64{
		0xb7 | 2<<32, // BPF_ALU64|BPF_MOV|BPF_K, dst r0, imm XDP_PASS (2)
		0x95,         // BPF_JMP|BPF_EXIT
	}
	license := []byte("GPL\x00")
	attr := struct {
		progType, insnCnt   uint32
		insns, license      uint64
		logLevel, logSize   uint32
		logBuf              uint64
		kernVersion, pflags uint32
	}{
		progType: unix.BPF_PROG_TYPE_XDP,
		insnCnt:  uint32(len(insns)),
		insns:    uint64(uintptr(unsafe.Pointer(&insns[0]))),
		license:  uint64(uintptr(unsafe.Pointer(&license[0]))),
	}
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(&insns)
	runtime.KeepAlive(license)
	if errno != 0 {
		return -1, fmt.Errorf("BPF_PROG_LOAD: %w", errno)
	}
	return int(fd), nil
}

// Proc is a process started inside a namespace.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error // valid once done is closed
}

// Start runs bin with args inside the node's namespace until the test ends.
// `ip netns exec` execs the binary, so the pid is the binary's own.
func (topo *Topology) Start(t *testing.T, n *Node, name, bin string, args ...string) *Proc {
	t.Helper()
	return topo.startIn(t, n.NS, name, bin, args...)
}

// startIn runs bin in any namespace of the topology (the switch's, too).
func (topo *Topology) startIn(t *testing.T, ns, name, bin string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Name: name, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	// If the test binary dies, its children must not outlive it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := startOnForkThread(p.cmd); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	topo.mu.Lock()
	topo.procs = append(topo.procs, p)
	topo.mu.Unlock()
	return p
}

// Pdeathsig fires when the *thread* that forked the child exits, and the
// threads Do used do exit. So every child is forked from one locked thread
// that lives as long as the test binary.
var forkRequests = make(chan forkRequest)

type forkRequest struct {
	cmd  *exec.Cmd
	errc chan error
}

func init() {
	go func() {
		runtime.LockOSThread()
		for r := range forkRequests {
			r.errc <- r.cmd.Start()
		}
	}()
}

func startOnForkThread(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	forkRequests <- forkRequest{cmd, errc}
	return <-errc
}

// Signal sends sig to the process if it still runs.
func (p *Proc) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return fmt.Errorf("%s already exited: %v", p.Name, p.err)
	default:
	}
	return p.cmd.Process.Signal(sig)
}

// Stop sends SIGTERM, waits up to grace, then SIGKILLs. It reports whether
// the process ended on SIGTERM within the grace period.
func (p *Proc) Stop(grace time.Duration) (graceful bool) {
	select {
	case <-p.done:
		return true
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return true
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return false
}

// Exited reports whether the process has ended, and how.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Output is everything the process wrote so far.
func (p *Proc) Output() string { return p.out.String() }

// Tail is the last n lines of the output.
func (p *Proc) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Output(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WaitOutput waits until the output contains substr, the process exits, or timeout.
func (p *Proc) WaitOutput(substr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if strings.Contains(p.Output(), substr) {
			return nil
		}
		if done, err := p.Exited(); done {
			return fmt.Errorf("%s exited (%v) before printing %q", p.Name, err, substr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not print %q within %s", p.Name, substr, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Bounded: a chatty debug log must not eat the machine's memory.
	if s.b.Len() > 32<<20 {
		rest := s.b.Bytes()[s.b.Len()-16<<20:]
		s.b = *bytes.NewBuffer(append([]byte(nil), rest...))
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func runCmd(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := runCmd(ctx, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veths and a bridge")
	}
}

// binPath finds a binary built by `make build` (bin/ at the repository root),
// or in $XDPLB_BIN_DIR. A missing binary fails: these tests exist to run it.
func binPath(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv("XDPLB_BIN_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "bin")
	}
	p, err := filepath.Abs(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s: %v (run `make build` first)", p, err)
	}
	return p
}
