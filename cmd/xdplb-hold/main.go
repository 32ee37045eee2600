// Command xdplb-hold does nothing until SIGTERM or SIGINT. It is the
// process of a container that only holds a network namespace for the
// balancer to join (Compose: `network_mode: service:lbnet`), as a
// Kubernetes pod's pause container does: the namespace, its interfaces and
// the XDP program on them then outlive the balancer's own container, so
// that `docker restart`, a crash and a new image keep every flow without a
// gap (README, "Restarts keep flows").
//
// It is a binary and an image of its own (xdplb-hold:N), not a subcommand
// of xdplb, so that upgrading xdplb changes nothing Compose compares for
// the holder: it is recreated, and every flow with it, only when this
// program's version N changes.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(hold(os.Args[1:], os.Stdout, os.Stderr))
}

func hold(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "xdplb-hold: takes no arguments, got %q\n", args[0])
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintln(stdout, "xdplb-hold: holding this network namespace for the balancer until SIGTERM")
	<-ctx.Done()
	return 0
}
