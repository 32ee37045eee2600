// Package testkit is what every integration test needs and none should
// write again: one way to wait for a condition, one median, one reader of
// the balancer's log lines. The namespace, Docker and Compose tests all
// use it, so that a timeout, a statistic or a parsed field means the same
// thing in each.
package testkit

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Every is how often Eventually looks: often enough that a wait ends
// within a fraction of the timeouts the tests use, rarely enough not to
// load a shared 2-core machine.
const Every = 100 * time.Millisecond

// Eventually calls cond until it holds (true) or timeout has passed
// (false). cond runs at least once, and once more after the deadline, so a
// slow last poll is not mistaken for a timeout.
func Eventually(timeout time.Duration, cond func() bool) bool {
	return EventuallyEvery(timeout, Every, cond)
}

// EventuallyEvery is Eventually looking every `every`: for waits whose
// end is itself a measurement (a latency, a gap), where Every would round
// it up.
func EventuallyEvery(timeout, every time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return cond()
		}
		time.Sleep(every)
	}
}

// WaitFor is Eventually that fails the test, naming what did not happen.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Eventually(timeout, cond) {
		t.Fatalf("no %s within %s", what, timeout)
	}
}

// Median of durations: the mean of the middle two for an even count, 0
// for none. The input is not reordered.
func Median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

// LogLine is one line of logrus' text format, by field.
type LogLine map[string]string

// ParseLog returns the lines of logrus text output that carry a msg, in
// order. Compose's "service-1  | " prefix, if any, is skipped.
func ParseLog(s string) []LogLine {
	var out []LogLine
	for _, line := range strings.Split(s, "\n") {
		if i := strings.Index(line, " | "); i >= 0 && !strings.Contains(line[:i], "=") {
			line = line[i+len(" | "):]
		}
		if f := ParseLogfmt(line); f["msg"] != "" {
			out = append(out, f)
		}
	}
	return out
}

// ParseLogfmt reads one line of logrus' text format: key=value pairs,
// values in Go-quoted form when they hold spaces, quotes or other
// specials. A bare word is a key with an empty value. A value whose quote
// never closes runs to the end of the line.
func ParseLogfmt(line string) LogLine {
	f := LogLine{}
	for i := 0; i < len(line); {
		for i < len(line) && line[i] == ' ' {
			i++
		}
		j := i
		for j < len(line) && line[j] != '=' && line[j] != ' ' {
			j++
		}
		key := line[i:j]
		if j >= len(line) || line[j] != '=' {
			if key != "" {
				f[key] = ""
			}
			i = j
			continue
		}
		j++ // past '='
		if j < len(line) && line[j] == '"' {
			k := j + 1
			for k < len(line) && line[k] != '"' {
				if line[k] == '\\' {
					k++
				}
				k++
			}
			end := min(k+1, len(line))
			v, err := strconv.Unquote(line[j:end])
			if err != nil {
				v = strings.Trim(line[j:end], `"`)
			}
			f[key] = v
			i = end
			continue
		}
		k := j
		for k < len(line) && line[k] != ' ' {
			k++
		}
		f[key] = line[j:k]
		i = k
	}
	return f
}

// BPFFS mounts a BPF filesystem of the test's own in a temporary
// directory, where a balancer under test pins its state. Unmounting it at
// the end frees whatever is still pinned there. Needs root.
func BPFFS(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mounting a BPF filesystem: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}
