package netns_test

// Traffic helpers: whoami requests, bursts, UDP exchanges, verified bulk
// transfers, Prometheus scrapes and raw frames for the checksum probes.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/test/testkit"
)

// answer is what whoami's GET / says.
type answer struct {
	Host   string
	Addr   netip.AddrPort // the backend's side of the connection
	Remote netip.AddrPort // the peer the backend saw: the LB under full NAT
}

func parseAnswer(body string) (answer, error) {
	var a answer
	for _, line := range strings.Split(body, "\n") {
		k, v, _ := strings.Cut(line, " ")
		var err error
		switch k {
		case "hostname":
			a.Host = v
		case "addr":
			a.Addr, err = netip.ParseAddrPort(v)
		case "remote":
			a.Remote, err = netip.ParseAddrPort(v)
		}
		if err != nil {
			return a, fmt.Errorf("bad %s line in %q: %w", k, body, err)
		}
	}
	if a.Host == "" || !a.Remote.IsValid() || !a.Addr.IsValid() {
		return a, fmt.Errorf("not a whoami answer: %q", body)
	}
	return a, nil
}

func getWhoami(ctx context.Context, hc *http.Client, url string) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return answer{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return answer{}, fmt.Errorf("reading body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return answer{}, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return parseAnswer(string(body))
}

// burst is the outcome of many requests.
type burst struct {
	OK, Failed int
	ByHost     map[string]int
	ByRemote   map[netip.Addr]int
	BadAddr    []string // answers whose backend-side address is not backend:8080
	Errors     map[string]int
	Elapsed    time.Duration
}

func newBurst() *burst {
	return &burst{ByHost: map[string]int{}, ByRemote: map[netip.Addr]int{}, Errors: map[string]int{}}
}

func (b *burst) add(a answer, err error, backendIPs map[string]netip.Addr) {
	if err != nil {
		b.Failed++
		b.Errors[err.Error()]++
		return
	}
	b.OK++
	b.ByHost[a.Host]++
	b.ByRemote[a.Remote.Addr()]++
	if ip, ok := backendIPs[a.Host]; !ok || a.Addr != netip.AddrPortFrom(ip, 8080) {
		b.BadAddr = append(b.BadAddr, fmt.Sprintf("%s answered on %s", a.Host, a.Addr))
	}
}

func (b *burst) errorSummary() string {
	var out []string
	for e, n := range b.Errors {
		out = append(out, fmt.Sprintf("%d x %s", n, e))
	}
	sort.Strings(out)
	if len(out) > 8 {
		out = append(out[:8], fmt.Sprintf("... %d more distinct", len(out)-8))
	}
	return strings.Join(out, "\n  ")
}

func (b *burst) spread(hosts []string) string {
	var parts []string
	total := b.OK + b.Failed
	for _, h := range hosts {
		parts = append(parts, fmt.Sprintf("%s %d (%.1f%%)", h, b.ByHost[h], 100*float64(b.ByHost[h])/float64(max(total, 1))))
	}
	return strings.Join(parts, ", ")
}

// httpBurst fires perClient GET / from every client at once, each on a new
// connection, all released by one barrier so they really are concurrent.
func httpBurst(clients []*Node, url string, perClient int, backendIPs map[string]netip.Addr) *burst {
	res := newBurst()
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, c := range clients {
		hc := c.HTTPClient(false, 20*time.Second)
		for i := 0; i < perClient; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				a, err := getWhoami(ctx, hc, url)
				mu.Lock()
				res.add(a, err, backendIPs)
				mu.Unlock()
			}()
		}
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	res.Elapsed = time.Since(t0)
	return res
}

// udpResult is the outcome of UDP exchanges.
type udpResult struct {
	OK, Failed, Resends int
	ByHost              map[string]int
	Errors              []string
}

// udpExchanges sends one datagram from each of perClient fresh sockets per
// client (a fresh source port is a fresh flow) and checks the reply: it must
// come from `to` (the VIP, not the backend) and echo the payload after
// "hostname NAME ". A lost datagram is resent on the same socket.
func udpExchanges(clients []*Node, to netip.AddrPort, perClient int) *udpResult {
	res := &udpResult{ByHost: map[string]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range clients {
		for i := 0; i < perClient; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				host, resends, err := udpExchange(c, to, fmt.Sprintf("ping %s %d", c.Role, i))
				mu.Lock()
				defer mu.Unlock()
				res.Resends += resends
				if err != nil {
					res.Failed++
					res.Errors = append(res.Errors, fmt.Sprintf("%s #%d: %v", c.Role, i, err))
					return
				}
				res.OK++
				res.ByHost[host]++
			}()
		}
	}
	wg.Wait()
	sort.Strings(res.Errors)
	return res
}

func udpExchange(c *Node, to netip.AddrPort, payload string) (host string, resends int, err error) {
	pc, err := c.ListenPacket("udp4", ":0")
	if err != nil {
		return "", 0, err
	}
	defer pc.Close()
	buf := make([]byte, 2048)
	const attempts = 4
	for a := 0; a < attempts; a++ {
		if a > 0 {
			resends++
		}
		if _, err := pc.WriteTo([]byte(payload), net.UDPAddrFromAddrPort(to)); err != nil {
			return "", resends, fmt.Errorf("send: %w", err)
		}
		_ = pc.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
		n, from, err := pc.ReadFrom(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		if err != nil {
			return "", resends, fmt.Errorf("receive: %w", err)
		}
		src := from.(*net.UDPAddr).AddrPort()
		if netip.AddrPortFrom(src.Addr().Unmap(), src.Port()) != to {
			return "", resends, fmt.Errorf("reply from %s, want %s", src, to)
		}
		rest, ok := strings.CutPrefix(string(buf[:n]), "hostname ")
		name, echoed, ok2 := strings.Cut(rest, " ")
		if !ok || !ok2 || echoed != payload {
			return "", resends, fmt.Errorf("reply %q does not echo %q", buf[:n], payload)
		}
		return name, resends, nil
	}
	return "", resends, fmt.Errorf("no reply after %d attempts", attempts)
}

// dataStream is the /data generator of cmd/whoami, reimplemented here from
// its specification (SplitMix64, seed 0, words little-endian) so the check
// does not share code with the thing it checks.
type dataStream struct {
	state  uint64
	buf    [8]byte
	used   int
	remain int64
}

func newDataStream(size int64) *dataStream { return &dataStream{used: 8, remain: size} }

func (d *dataStream) next() uint64 {
	d.state += 0x9e3779b97f4a7c15
	z := d.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (d *dataStream) Read(p []byte) (int, error) {
	if d.remain <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > d.remain {
		p = p[:d.remain]
	}
	i := 0
	for ; i < len(p) && d.used < 8; i++ { // the rest of a word a short read split
		p[i] = d.buf[d.used]
		d.used++
	}
	for ; len(p)-i >= 8; i += 8 {
		binary.LittleEndian.PutUint64(p[i:], d.next())
	}
	if i < len(p) {
		binary.LittleEndian.PutUint64(d.buf[:], d.next())
		d.used = 0
		for ; i < len(p); i++ {
			p[i] = d.buf[d.used]
			d.used++
		}
	}
	d.remain -= int64(len(p))
	return len(p), nil
}

// checkData is a testkit.ReadPaced check of a /data body: every byte the
// generator's for size bytes, the first that differs named.
func checkData(size int64) func([]byte) error {
	want := newDataStream(size)
	exp := make([]byte, 256<<10)
	var off int64
	return func(got []byte) error {
		if len(got) > len(exp) {
			exp = make([]byte, len(got))
		}
		if m, _ := io.ReadFull(want, exp[:len(got)]); m < len(got) {
			return fmt.Errorf("more than %d bytes", size)
		}
		if !bytes.Equal(got, exp[:len(got)]) {
			i := 0
			for got[i] == exp[i] {
				i++
			}
			return fmt.Errorf("byte %d differs: got 0x%02x want 0x%02x", off+int64(i), got[i], exp[i])
		}
		off += int64(len(got))
		return nil
	}
}

// download GETs /data?size=N and compares every byte with the generator.
// It returns the answering host and the throughput in MB/s.
func download(ctx context.Context, hc *http.Client, base string, size int64) (string, float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%sdata?size=%d", base, size), nil)
	if err != nil {
		return "", 0, err
	}
	t0 := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf("GET data: %s", resp.Status)
	}
	n, err := testkit.ReadPaced(resp.Body, 0, checkData(size))
	if err != nil {
		return "", 0, err
	}
	if n != size {
		return "", 0, fmt.Errorf("got %d of %d bytes", n, size)
	}
	return resp.Header.Get("X-Hostname"), float64(size) / 1e6 / time.Since(t0).Seconds(), nil
}

// upload POSTs N bytes of the generator to /sink and compares the server's
// byte count and SHA-256 with our own.
func upload(ctx context.Context, hc *http.Client, base string, size int64) (string, float64, error) {
	h := sha256.New()
	_, _ = io.Copy(h, newDataStream(size))
	want := fmt.Sprintf("bytes %d\nsha256 %x\n", size, h.Sum(nil))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"sink", io.NopCloser(newDataStream(size)))
	if err != nil {
		return "", 0, err
	}
	req.ContentLength = size
	t0 := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", 0, err
	}
	if resp.StatusCode != http.StatusOK || string(body) != want {
		return "", 0, fmt.Errorf("sink answered %s %q, want %q", resp.Status, body, want)
	}
	return resp.Header.Get("X-Hostname"), float64(size) / 1e6 / time.Since(t0).Seconds(), nil
}

// metrics is one Prometheus text scrape.
type metrics []sample

type sample struct {
	name   string
	labels map[string]string
	value  float64
}

func parseMetrics(text string) (metrics, error) {
	var out metrics
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("bad metrics line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("bad value in %q: %w", line, err)
		}
		s := sample{labels: map[string]string{}, value: v}
		series := line[:i]
		name, rest, hasLabels := strings.Cut(series, "{")
		s.name = name
		if hasLabels {
			rest = strings.TrimSuffix(rest, "}")
			for rest != "" {
				k, after, ok := strings.Cut(rest, "=")
				if !ok {
					return nil, fmt.Errorf("bad labels in %q", line)
				}
				val, tail, err := cutQuoted(after)
				if err != nil {
					return nil, fmt.Errorf("bad label %s in %q: %w", k, line, err)
				}
				s.labels[k] = val
				rest = strings.TrimPrefix(tail, ",")
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// cutQuoted reads a Go-quoted string (what %q writes) from the front of s.
func cutQuoted(s string) (string, string, error) {
	for i := 1; i < len(s); i++ {
		if s[i] == '\\' {
			i++
			continue
		}
		if s[i] == '"' {
			v, err := strconv.Unquote(s[:i+1])
			return v, s[i+1:], err
		}
	}
	return "", "", errors.New("unterminated quote")
}

// get sums the samples of name whose labels include every pair of want.
func (m metrics) get(name string, want ...string) (float64, bool) {
	var sum float64
	found := false
next:
	for _, s := range m {
		if s.name != name {
			continue
		}
		for i := 0; i+1 < len(want); i += 2 {
			if s.labels[want[i]] != want[i+1] {
				continue next
			}
		}
		sum += s.value
		found = true
	}
	return sum, found
}

func (m metrics) reason(r string) float64 {
	v, _ := m.get("xdplb_reason_packets_total", "reason", r)
	return v
}

// --- raw frames, for probing what the topology does to checksums ---

func csumFold(sum uint32) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func csumAdd(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}

// udpFrame builds Ethernet+IPv4+UDP with correct checksums, or with the UDP
// checksum deliberately wrong.
func udpFrame(src, dst *Node, sport, dport uint16, payload []byte, corrupt bool) []byte {
	ipLen := 20 + 8 + len(payload)
	f := make([]byte, 14+ipLen)
	copy(f[0:6], dst.MAC)
	copy(f[6:12], src.MAC)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(ipLen))
	binary.BigEndian.PutUint16(ip[4:], 0x1234)
	binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
	ip[8] = 64
	ip[9] = 17
	s4, d4 := src.IP.As4(), dst.IP.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:], csumFold(csumAdd(0, ip[:20])))
	udp := ip[20:]
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	copy(udp[8:], payload)
	sum := csumAdd(0, ip[12:20])
	sum += 17 + uint32(8+len(payload))
	c := csumFold(csumAdd(sum, udp))
	if c == 0 {
		c = 0xffff
	}
	if corrupt {
		c ^= 0x5a5a
	}
	binary.BigEndian.PutUint16(udp[6:], c)
	return f
}

// sendFrame writes one frame on the node's eth0 through a packet socket: the
// kernel sends it as is (CHECKSUM_NONE), bypassing the node's own stack.
func sendFrame(n *Node, frame []byte) error {
	return withPacketSocket(n, frame[0:6], func(send func([]byte) error) error { return send(frame) })
}

// withPacketSocket runs fn in the node's namespace with a function that
// sends whole frames to dst on its eth0 through one packet socket. A full
// transmit queue (ENOBUFS) is waited out, not reported.
func withPacketSocket(n *Node, dst net.HardwareAddr, fn func(send func([]byte) error) error) error {
	return n.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		copy(sa.Addr[:], dst)
		return fn(func(frame []byte) error {
			for {
				err := unix.Sendto(fd, frame, 0, sa)
				if err == unix.ENOBUFS || err == unix.EAGAIN {
					time.Sleep(50 * time.Microsecond)
					continue
				}
				return err
			}
		})
	})
}

// captureTCPStatus opens a packet socket on the node's eth0, runs trigger, and
// returns the PACKET_AUXDATA status of the first received TCP segment from
// src to dport: TP_STATUS_CSUMNOTREADY means it arrived with a partial
// checksum, i.e. nobody on the way completed it.
func captureTCPStatus(n *Node, src netip.Addr, dport uint16, trigger func()) (uint32, error) {
	var fd int
	err := n.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_IP))
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, proto)
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
			unix.Close(fd)
			return fmt.Errorf("PACKET_AUXDATA: %w", err)
		}
		tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	done := make(chan struct{})
	go func() { trigger(); close(done) }()
	defer func() { <-done }()
	buf := make([]byte, 65536)
	oob := make([]byte, 256)
	s4 := src.As4()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		nr, noob, _, _, err := unix.Recvmsg(fd, buf, oob, 0)
		if err != nil {
			continue // timeout: poll again until the deadline
		}
		ip := buf[:nr] // SOCK_RAW on a packet socket includes the Ethernet header
		if len(ip) < 14+20+20 {
			continue
		}
		ip = ip[14:]
		ihl := int(ip[0]&0x0f) * 4
		if ip[9] != 6 || [4]byte(ip[12:16]) != s4 || len(ip) < ihl+4 || binary.BigEndian.Uint16(ip[ihl+2:]) != dport {
			continue
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:noob])
		if err != nil {
			return 0, err
		}
		for _, m := range msgs {
			if m.Header.Level == unix.SOL_PACKET && m.Header.Type == unix.PACKET_AUXDATA && len(m.Data) >= int(unsafe.Sizeof(unix.TpacketAuxdata{})) {
				aux := (*unix.TpacketAuxdata)(unsafe.Pointer(&m.Data[0]))
				return aux.Status, nil
			}
		}
		return 0, errors.New("no PACKET_AUXDATA on a captured frame")
	}
	return 0, fmt.Errorf("no TCP segment from %s to port %d seen on %s", src, dport, n.Role)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// snmpAll reads /proc/net/snmp of every node.
func snmpAll(t *testing.T, nodes []*Node) map[string]map[string]int64 {
	t.Helper()
	out := map[string]map[string]int64{}
	for _, n := range nodes {
		s, err := n.SNMP()
		if err != nil {
			t.Fatalf("snmp of %s: %v", n.Role, err)
		}
		out[n.Role] = s
	}
	return out
}

// checksumErrorCounters are the kernel's own verdicts on received checksums.
var checksumErrorCounters = []string{"Ip.InHdrErrors", "Tcp.InCsumErrors", "Udp.InCsumErrors", "Icmp.InCsumErrors"}

// checkChecksumErrors fails if any node counted a bad checksum between the
// two snapshots, and reports TCP retransmissions (a symptom, not asserted).
func checkChecksumErrors(t *testing.T, before, after map[string]map[string]int64) {
	t.Helper()
	var retrans, bad []string
	var total int64
	roles := make([]string, 0, len(after))
	for r := range after {
		roles = append(roles, r)
	}
	sort.Strings(roles)
	for _, role := range roles {
		for _, c := range checksumErrorCounters {
			if d := after[role][c] - before[role][c]; d != 0 {
				total += d
				bad = append(bad, fmt.Sprintf("%s counted %d %s", role, d, c))
			}
		}
		if d := after[role]["Tcp.RetransSegs"] - before[role]["Tcp.RetransSegs"]; d > 0 {
			retrans = append(retrans, fmt.Sprintf("%s %d", role, d))
		}
	}
	if len(retrans) > 0 {
		t.Logf("TCP retransmitted segments: %s", strings.Join(retrans, ", "))
	}
	if total > 0 {
		t.Errorf("%d checksums arrived wrong: %s", total, strings.Join(bad, "; "))
	}
}

// keepAliveGet sends GET / on an open connection and reads the answer.
func keepAliveGet(c net.Conn, br *bufio.Reader, timeout time.Duration) (answer, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: vip\r\n\r\n"); err != nil {
		return answer{}, fmt.Errorf("write: %w", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return answer{}, fmt.Errorf("read: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return answer{}, fmt.Errorf("read body: %w", err)
	}
	return parseAnswer(string(body))
}

// ping sends ICMP echo requests from the node and counts matching replies
// (iputils is not installed everywhere, so no `ping` binary).
func ping(n *Node, to netip.Addr, count int) (int, error) {
	var pc net.PacketConn
	if err := n.Do(func() error {
		var err error
		pc, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		return 0, fmt.Errorf("icmp socket: %w", err)
	}
	defer pc.Close()
	const id = 0x7a11
	got := 0
	buf := make([]byte, 1500)
	for seq := 1; seq <= count; seq++ {
		msg := []byte{8, 0, 0, 0, id >> 8, id & 0xff, 0, byte(seq), 'x', 'l', 'b', 't'}
		binary.BigEndian.PutUint16(msg[2:], csumFold(csumAdd(0, msg)))
		if _, err := pc.WriteTo(msg, &net.IPAddr{IP: to.AsSlice()}); err != nil {
			return got, err
		}
		_ = pc.SetReadDeadline(time.Now().Add(2 * time.Second))
		for {
			nr, from, err := pc.ReadFrom(buf)
			if err != nil {
				break // timeout: this one is lost
			}
			// A raw ICMP socket hands over the ICMP message without the IP header.
			if nr >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[4:]) == id && int(buf[7]) == seq &&
				from.(*net.IPAddr).IP.Equal(to.AsSlice()) {
				got++
				break
			}
		}
	}
	return got, nil
}
