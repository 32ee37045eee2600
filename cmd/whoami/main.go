// Command whoami is the demo and test backend of xdplb: a tiny static server
// that tells every client which replica answered, over HTTP, TCP and UDP, plus
// the matching client, a health probe and health toggles. It uses only the
// standard library and builds with CGO_ENABLED=0, so it runs in a FROM scratch
// image where there is no shell, curl or wget.
//
//	whoami serve  [--http=:8080] [--tcp=:9000] [--udp=:9001] [--name=NAME]
//	whoami client [--url=URL | --tcp=HOST:PORT | --udp=HOST:PORT] [--n=200] [--concurrency=20] [--timeout=5s] [--every=0]
//	whoami check  [--url=http://127.0.0.1:8080/health]
//	whoami sick | well
//	whoami data   --size=N
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: whoami COMMAND [flags]

commands:
  serve    answer HTTP, TCP and UDP with this replica's name
  client   send requests to a server (or a VIP) and count answers per replica
  check    exit 0 if the health URL answers 200 (for HEALTHCHECK in a scratch image)
  sick     make 'serve' report unhealthy (creates ` + defaultUnhealthyFile + `)
  well     make 'serve' report healthy again (removes ` + defaultUnhealthyFile + `)
  data     write the /data byte stream to stdout (to recompute its checksum)

Run 'whoami COMMAND -h' for the flags of a command.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a command line and returns the process exit code, so tests
// can drive every command in-process.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	// As PID 1 in a container no signal has a default action, so without
	// this `docker stop` would wait for its SIGKILL timeout.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	switch cmd {
	case "serve":
		return cmdServe(ctx, rest, stderr)
	case "client":
		return cmdClient(ctx, rest, stdout, stderr)
	case "check":
		return cmdCheck(rest, stderr)
	case "sick":
		return cmdSick(rest, stderr)
	case "well":
		return cmdWell(rest, stderr)
	case "data":
		return cmdData(rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "whoami: unknown command %q\n\n%s", cmd, usage)
	return 2
}
