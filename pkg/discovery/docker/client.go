package docker

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/docker/docker/client"
)

// newClient connects to the engine the way the docker CLI would: DOCKER_HOST,
// DOCKER_API_VERSION, DOCKER_CERT_PATH and DOCKER_TLS_VERIFY are honoured,
// and an explicit host overrides DOCKER_HOST. The API version is negotiated
// on first use so the same binary talks to engine 20.10 (API 1.41) and newer.
// No I/O happens here: an unreachable engine shows up on the first request.
func newClient(host string) (*client.Client, error) {
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	cli, err := client.NewClientWithOpts(opts...)
	if err != nil {
		where := host
		if where == "" {
			where = "DOCKER_HOST/default socket"
		}
		return nil, fmt.Errorf("docker client for %s: %w", where, err)
	}
	return cli, nil
}

// isUnreachable tells a dead or absent engine from an engine that answered
// with an error, so the caller can say "cannot reach Docker at ..." instead
// of blaming the request.
func isUnreachable(err error) bool {
	if err == nil {
		return false
	}
	if client.IsErrConnectionFailed(err) {
		return true
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// unreachableCause digs out why an engine cannot be reached. For "connection
// failed" the docker client replaces the cause with a generic sentence, which
// does not tell a missing socket (not mounted into the container) from a
// refused one (engine down) or a permission problem; a direct dial of a unix
// socket does.
func unreachableCause(host string, err error) error {
	if !client.IsErrConnectionFailed(err) {
		return err
	}
	u, perr := client.ParseHostURL(host)
	if perr != nil || u.Scheme != "unix" {
		return err
	}
	c, derr := net.DialTimeout("unix", u.Host, time.Second)
	if derr != nil {
		return derr
	}
	c.Close()
	return err
}
