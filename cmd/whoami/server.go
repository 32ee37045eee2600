package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// defaultUnhealthyFile is the health toggle. A file rather than an endpoint so
// that `docker exec CONTAINER /whoami sick` flips it in a scratch image, and so
// that a client of the load balancer cannot.
const defaultUnhealthyFile = "/tmp/whoami-unhealthy"

// server holds what the handlers need: the replica name and the health toggle.
type server struct {
	name          string
	unhealthyFile string
	logger        *log.Logger
	// stopping is set when the stop signal arrives: /health fails from then
	// on, while the listeners keep serving for the shutdown delay.
	stopping atomic.Bool
}

// hostnameHeader is set on every HTTP answer so clients can count replicas
// without parsing bodies (the /data and /sink bodies are not text).
const hostnameHeader = "X-Hostname"

func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.handleRoot)
	mux.HandleFunc("GET /health", s.handleHealth)
	mux.HandleFunc("GET /data", s.handleData)
	mux.HandleFunc("POST /sink", s.handleSink)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(hostnameHeader, s.name)
		mux.ServeHTTP(w, r)
	})
}

// handleRoot says who answered and which addresses the connection had on this
// side: behind a full-NAT balancer "remote" is the balancer, not the client.
func (s *server) handleRoot(w http.ResponseWriter, r *http.Request) {
	local := "unknown"
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		local = a.String()
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "hostname %s\naddr %s\nremote %s\n", s.name, local, r.RemoteAddr)
}

func (s *server) healthy() bool {
	if s.stopping.Load() {
		return false
	}
	_, err := os.Stat(s.unhealthyFile)
	return errors.Is(err, os.ErrNotExist)
}

func (s *server) handleHealth(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !s.healthy() {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "unhealthy")
		return
	}
	fmt.Fprintln(w, "ok")
}

// handleData streams the first size bytes of the SplitMix64 stream (data.go).
// Content-Length is set, so a truncated transfer is an error for the client.
func (s *server) handleData(w http.ResponseWriter, r *http.Request) {
	size, err := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
	if err != nil || size < 0 || size > maxDataSize {
		http.Error(w, fmt.Sprintf("size must be an integer in [0, %d]", int64(maxDataSize)), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.Header().Set("X-Data-Generator", dataGenerator)
	if r.Method == http.MethodHead {
		return
	}
	if _, err := io.CopyBuffer(w, newDataReader(size), make([]byte, 64<<10)); err != nil {
		s.logger.Printf("http /data to %s: %v", r.RemoteAddr, err)
	}
}

// handleSink hashes whatever it is sent, so an upload through the balancer can
// be checked end to end against the sender's own hash.
func (s *server) handleSink(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, r.Body, make([]byte, 64<<10))
	if err != nil {
		http.Error(w, fmt.Sprintf("reading body after %d bytes: %v", n, err), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "bytes %d\nsha256 %x\n", n, h.Sum(nil))
}

// serveTCP greets each connection with the replica name, then echoes. When
// the listener is closed it also closes the open sessions, so shutdown does
// not wait for clients to hang up.
func (s *server) serveTCP(ln net.Listener) error {
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	defer func() {
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("tcp accept: %w", err)
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
			if _, err := fmt.Fprintf(c, "hostname %s\n", s.name); err != nil {
				return
			}
			_, _ = io.Copy(c, c)
		}()
	}
}

// serveUDP answers each datagram with "hostname NAME " and the payload.
func (s *server) serveUDP(pc net.PacketConn) error {
	buf := make([]byte, 64<<10)
	prefix := []byte("hostname " + s.name + " ")
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("udp read: %w", err)
		}
		reply := append(append(make([]byte, 0, len(prefix)+n), prefix...), buf[:n]...)
		if _, err := pc.WriteTo(reply, from); err != nil {
			s.logger.Printf("udp reply to %s: %v", from, err)
		}
	}
}

func cmdServe(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("whoami serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	httpAddr := fs.String("http", ":8080", "HTTP listen address (empty disables)")
	tcpAddr := fs.String("tcp", ":9000", "TCP greet+echo listen address (empty disables)")
	udpAddr := fs.String("udp", ":9001", "UDP echo listen address (empty disables)")
	name := fs.String("name", "", "name to answer with (default: the hostname)")
	unhealthy := fs.String("unhealthy-file", defaultUnhealthyFile, "while this file exists /health answers 503")
	shutdownDelay := fs.Duration("shutdown-delay", 2*time.Second, "after SIGTERM, keep accepting this long (with /health failing) before shutting down, so a load balancer can drain this replica first; 0 stops at once")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "whoami serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	logger := log.New(stderr, "whoami: ", log.LstdFlags)
	if *name == "" {
		h, err := os.Hostname()
		if err != nil {
			logger.Printf("hostname: %v", err)
			return 1
		}
		*name = h
	}
	s := &server{name: *name, unhealthyFile: *unhealthy, logger: logger}
	if err := s.listenAndServe(ctx, *shutdownDelay, *httpAddr, *tcpAddr, *udpAddr); err != nil {
		logger.Print(err)
		return 1
	}
	return 0
}

// listenAndServe binds every listener first, so a port conflict fails the
// start instead of leaving a half-working replica, then serves until ctx ends.
func (s *server) listenAndServe(ctx context.Context, shutdownDelay time.Duration, httpAddr, tcpAddr, udpAddr string) error {
	var closers []io.Closer
	closeAll := func() {
		for _, c := range closers {
			c.Close()
		}
	}
	var httpLn, tcpLn net.Listener
	var udpConn net.PacketConn
	var err error
	if httpAddr != "" {
		if httpLn, err = net.Listen("tcp", httpAddr); err != nil {
			return fmt.Errorf("http listen: %w", err)
		}
		closers = append(closers, httpLn)
	}
	if tcpAddr != "" {
		if tcpLn, err = net.Listen("tcp", tcpAddr); err != nil {
			closeAll()
			return fmt.Errorf("tcp listen: %w", err)
		}
		closers = append(closers, tcpLn)
	}
	if udpAddr != "" {
		if udpConn, err = net.ListenPacket("udp", udpAddr); err != nil {
			closeAll()
			return fmt.Errorf("udp listen: %w", err)
		}
		closers = append(closers, udpConn)
	}
	if len(closers) == 0 {
		return errors.New("nothing to serve: --http, --tcp and --udp are all empty")
	}

	errc := make(chan error, 3)
	running := 0
	var srv *http.Server
	if httpLn != nil {
		srv = &http.Server{Handler: s.handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: s.logger}
		running++
		go func() {
			if err := srv.Serve(httpLn); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("http: %w", err)
				return
			}
			errc <- nil
		}()
		s.logger.Printf("%s: http on %s", s.name, httpLn.Addr())
	}
	if tcpLn != nil {
		running++
		go func() { errc <- s.serveTCP(tcpLn) }()
		s.logger.Printf("%s: tcp on %s", s.name, tcpLn.Addr())
	}
	if udpConn != nil {
		running++
		go func() { errc <- s.serveUDP(udpConn) }()
		s.logger.Printf("%s: udp on %s", s.name, udpConn.LocalAddr())
	}

	var first error
	select {
	case <-ctx.Done():
		// Lame duck: the balancer learns of the stop only after the signal
		// (Docker emits its kill event once delivered) and needs a moment
		// to drain; closing the listeners now would refuse the flows it
		// still sends here.
		s.stopping.Store(true)
		if shutdownDelay > 0 {
			s.logger.Printf("%s: stop signal; serving %s more before shutting down", s.name, shutdownDelay)
			select {
			case <-time.After(shutdownDelay):
			case first = <-errc:
				running--
			}
		}
		s.logger.Printf("%s: shutting down", s.name)
	case first = <-errc:
		running--
	}
	// Short grace for in-flight HTTP requests; TCP echo sessions are cut.
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		cancel()
	}
	closeAll()
	for ; running > 0; running-- {
		if err := <-errc; first == nil {
			first = err
		}
	}
	return first
}
