package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// cmdHold does nothing until SIGTERM or SIGINT. It is the command of a
// container that only holds a network namespace for the balancer to join
// (Compose: `network_mode: service:lbnet`), as a Kubernetes pod's pause
// container does: the namespace, its interfaces and the XDP program on them
// then outlive the balancer's own container, so that `docker restart`, a
// crash and a new image keep every flow without a gap. A scratch image has
// no sleep, hence a subcommand.
func cmdHold(args []string, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "xdplb hold: takes no arguments, got %q\n", args[0])
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Println("xdplb hold: holding this network namespace for the balancer until SIGTERM")
	<-ctx.Done()
	return 0
}
