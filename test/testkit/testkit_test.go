package testkit

import (
	"reflect"
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
