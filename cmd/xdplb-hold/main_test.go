package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// xdplb-hold is a container's only process: it must end at SIGTERM (as
// `docker stop` sends), promptly and with status 0, not wait for SIGKILL.
func TestHoldEndsOnSIGTERM(t *testing.T) {
	if os.Getenv("XDPLB_TEST_HOLD") == "1" {
		os.Exit(hold(nil, os.Stdout, os.Stderr))
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHoldEndsOnSIGTERM$")
	cmd.Env = append(os.Environ(), "XDPLB_TEST_HOLD=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The line comes after the handler is in place; a SIGTERM before it
	// would kill the process by default, a failure that proves nothing.
	if line, err := bufio.NewReader(out).ReadString('\n'); !strings.Contains(line, "until SIGTERM") {
		t.Fatalf("xdplb-hold said %q (%v)", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("xdplb-hold after SIGTERM: %v, want exit status 0", err)
		}
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("xdplb-hold still running 5 s after SIGTERM")
	}
}

func TestHoldRefusesArguments(t *testing.T) {
	var stderr bytes.Buffer
	if code := hold([]string{"forever"}, &bytes.Buffer{}, &stderr); code != 2 || !strings.Contains(stderr.String(), `"forever"`) || strings.Count(stderr.String(), "\n") != 1 {
		t.Errorf("exit %d, stderr %q: want 2 and one line naming the argument", code, stderr.String())
	}
}
