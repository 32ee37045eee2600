package testkit

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseLogfmt(t *testing.T) {
	cases := []struct {
		in   string
		want LogLine
	}{
		{`time="2026-12-03T19:07:48Z" level=info msg="backend added" backend=web-1 ports="80:8080/tcp,9000/tcp" weight=1`,
			LogLine{"time": "2026-12-03T19:07:48Z", "level": "info", "msg": "backend added", "backend": "web-1", "ports": "80:8080/tcp,9000/tcp", "weight": "1"}},
		{`level=warning msg="container \"web\" (abc): no \"xdplb.listen\"" container=web label=`,
			LogLine{"level": "warning", "msg": `container "web" (abc): no "xdplb.listen"`, "container": "web", "label": ""}},
		{`msg=ready bare  other=x`, LogLine{"msg": "ready", "bare": "", "other": "x"}},
		{`msg="cut off`, LogLine{"msg": "cut off"}},
		{``, LogLine{}},
	}
	for _, c := range cases {
		if got := ParseLogfmt(c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParseLogfmt(%q)\n got %v\nwant %v", c.in, got, c.want)
		}
	}
}

func TestParseLogSkipsComposePrefixAndLinesWithoutMsg(t *testing.T) {
	got := ParseLog("lb-1  | level=info msg=\"sync applied\" why=\"initial sync\"\nnot a log line\nlevel=info msg=b\n")
	if len(got) != 2 || got[0]["msg"] != "sync applied" || got[0]["why"] != "initial sync" || got[1]["msg"] != "b" {
		t.Errorf("got %v", got)
	}
}

func TestMedian(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	for _, c := range []struct {
		in   []time.Duration
		want time.Duration
	}{{nil, 0}, {ms(5), 5 * time.Millisecond}, {ms(9, 1, 5), 5 * time.Millisecond}, {ms(4, 1, 3, 2), 2500 * time.Microsecond}} {
		in := append([]time.Duration(nil), c.in...)
		if got := Median(c.in); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.in, got, c.want)
		}
		if !reflect.DeepEqual(in, c.in) {
			t.Errorf("Median reordered its input: %v", c.in)
		}
	}
}

func TestEventually(t *testing.T) {
	n := 0
	if !Eventually(time.Second, func() bool { n++; return n == 3 }) || n != 3 {
		t.Errorf("a condition true on the third call: n=%d", n)
	}
	start := time.Now()
	if Eventually(250*time.Millisecond, func() bool { return false }) {
		t.Error("a condition never true held")
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("gave up after %s, before the timeout", d)
	}
}

func TestReadPaced(t *testing.T) {
	data := strings.Repeat("x", 300<<10)
	start := time.Now()
	var seen int
	n, err := ReadPaced(strings.NewReader(data), 1<<20, func(b []byte) error { seen += len(b); return nil })
	if err != nil || n != int64(len(data)) || seen != len(data) {
		t.Fatalf("read %d (checked %d) of %d: %v", n, seen, len(data), err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("300 KiB at 1 MiB/s took %s, want about 290ms", d)
	}
	bad := errors.New("byte 7 differs")
	if _, err := ReadPaced(strings.NewReader(data), 0, func([]byte) error { return bad }); err != bad {
		t.Errorf("a check's error came back as %v", err)
	}
}

func TestProber(t *testing.T) {
	var calls atomic.Int32
	p := StartProber(func(context.Context) error {
		if calls.Add(1)%2 == 0 {
			return errors.New("refused")
		}
		return nil
	})
	from := time.Now()
	time.Sleep(100 * time.Millisecond)
	to := time.Now()
	failures, answered := p.Stop()
	if answered == 0 || len(failures) == 0 || failures[0] != "refused" {
		t.Fatalf("answered %d, failures %v", answered, failures)
	}
	if gap, _ := p.LongestGap(from, to); gap <= 0 || gap > 80*time.Millisecond {
		t.Errorf("longest gap %s while answering every other 5 ms", gap)
	}
	if gap, at := p.LongestGap(to.Add(time.Second), to.Add(2*time.Second)); gap != time.Second || at != 0 {
		t.Errorf("a window with no answer: gap %s at %s, want the whole second", gap, at)
	}
}
