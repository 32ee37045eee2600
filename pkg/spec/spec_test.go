package spec

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/xdplb/xdplb/pkg/lbmodel"
)

// checkErr fails unless err is non-nil and mentions every fragment: the
// point of these errors is to name the culprit.
func checkErr(t *testing.T, err error, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one mentioning %q", fragments)
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not mention %q", err, f)
		}
	}
}

func port(l, tg uint16, p lbmodel.Proto) lbmodel.Port {
	return lbmodel.Port{Listen: l, Target: tg, Proto: p}
}

func TestParsePorts(t *testing.T) {
	tests := []struct {
		in   string
		want []lbmodel.Port
	}{
		{"80", []lbmodel.Port{port(80, 80, lbmodel.TCP)}},
		{"8080/tcp", []lbmodel.Port{port(8080, 8080, lbmodel.TCP)}},
		{"53/udp", []lbmodel.Port{port(53, 53, lbmodel.UDP)}},
		{"53/UDP", []lbmodel.Port{port(53, 53, lbmodel.UDP)}},
		{"80:8080", []lbmodel.Port{port(80, 8080, lbmodel.TCP)}},
		{"80:8080/tcp,53/udp", []lbmodel.Port{port(80, 8080, lbmodel.TCP), port(53, 53, lbmodel.UDP)}},
		{"53/udp,53/tcp", []lbmodel.Port{port(53, 53, lbmodel.UDP), port(53, 53, lbmodel.TCP)}},
		{"80:80/tcp", []lbmodel.Port{port(80, 80, lbmodel.TCP)}},
		{"1:65535/udp", []lbmodel.Port{port(1, 65535, lbmodel.UDP)}},
		{"65535", []lbmodel.Port{port(65535, 65535, lbmodel.TCP)}},
		{"80, 443", []lbmodel.Port{port(80, 80, lbmodel.TCP), port(443, 443, lbmodel.TCP)}},
		{"81:80,80:80", []lbmodel.Port{port(81, 80, lbmodel.TCP), port(80, 80, lbmodel.TCP)}}, // two listens, one target: fine
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParsePorts(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParsePortsErrors(t *testing.T) {
	tests := []struct {
		in   string
		want []string // fragments the error must contain
	}{
		{"", []string{"empty port list"}},
		{"   ", []string{"empty port list"}},
		{"80,", []string{"empty entry", `"80,"`}},
		{",80", []string{"empty entry"}},
		{"80,,443", []string{"empty entry", `"80,,443"`}},
		{"0", []string{`"0"`, "out of range 1-65535", "listen"}},
		{"65536", []string{`"65536"`, "out of range"}},
		{"99999999999999999999", []string{`"99999999999999999999"`, "out of range"}},
		{"80:0", []string{`"0"`, "target", "out of range"}},
		{"80:70000/udp", []string{`"70000"`, "target", "out of range"}},
		{"http", []string{`"http"`, "not a number"}},
		{"-1", []string{`"-1"`}},
		{"+80", []string{`"+80"`, "not a number"}},
		{"0x50", []string{`"0x50"`, "not a number"}},
		{"8o:80", []string{`"8o"`, "not a number", "listen"}},
		{"80:eighty", []string{`"eighty"`, "not a number", "target"}},
		{"80/sctp", []string{`"sctp"`, "unknown protocol", `"80/sctp"`}},
		{"80/", []string{`"80/"`, "unknown protocol"}},
		{"80/tcp/udp", []string{`"tcp/udp"`, "unknown protocol"}},
		{"/tcp", []string{`"/tcp"`, "listen port missing"}},
		{"80:", []string{`"80:"`, "target port missing"}},
		{":80", []string{`":80"`, "listen port missing"}},
		{"0.0.0.0:80:8080", []string{`"0.0.0.0:80:8080"`, "too many ':'"}},
		{"8000-8010", []string{`"8000-8010"`, "ranges are not supported"}},
		{"80,80", []string{"80/tcp", "both listen"}},
		{"80:8080/tcp,80:9090/tcp", []string{`"80:8080/tcp"`, `"80:9090/tcp"`, "both listen on 80/tcp"}},
		{"53/udp,53:54/udp", []string{"both listen on 53/udp"}},
		{"80,80/tcp", []string{`"80"`, `"80/tcp"`, "both listen"}},
		{"80,443,x", []string{`"x"`}},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParsePorts(tc.in)
			checkErr(t, err, tc.want...)
			if got != nil {
				t.Errorf("got %v along with the error", got)
			}
		})
	}
}

func TestParseService(t *testing.T) {
	tests := []struct {
		in    string
		name  string
		ports []lbmodel.Port
	}{
		{"web=80:8080/tcp", "web", []lbmodel.Port{port(80, 8080, lbmodel.TCP)}},
		{"dns=53/udp", "dns", []lbmodel.Port{port(53, 53, lbmodel.UDP)}},
		{"dns=53/udp,53/tcp", "dns", []lbmodel.Port{port(53, 53, lbmodel.UDP), port(53, 53, lbmodel.TCP)}},
		{"web=80", "web", []lbmodel.Port{port(80, 80, lbmodel.TCP)}},
		{"my-app_1.v2=443:8443", "my-app_1.v2", []lbmodel.Port{port(443, 8443, lbmodel.TCP)}},
		{"0web=80", "0web", []lbmodel.Port{port(80, 80, lbmodel.TCP)}},
		{"W=80", "W", []lbmodel.Port{port(80, 80, lbmodel.TCP)}},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			name, ports, err := ParseService(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if name != tc.name || !slices.Equal(ports, tc.ports) {
				t.Errorf("got %q %v, want %q %v", name, ports, tc.name, tc.ports)
			}
		})
	}
}

func TestParseServiceErrors(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", []string{"missing '='"}},
		{"web", []string{`"web"`, "missing '='"}},
		{"80:8080/tcp", []string{`"80:8080/tcp"`, "missing '='"}},
		{"=80", []string{"empty service name"}},
		{"-web=80", []string{`"-web"`, "start with a letter or digit"}},
		{".web=80", []string{`".web"`, "start with a letter or digit"}},
		{"_web=80", []string{`"_web"`, "start with a letter or digit"}},
		{"we b=80", []string{`"we b"`, `' '`}},
		{"web/1=80", []string{`"web/1"`, `'/'`}},
		{"wéb=80", []string{`"wéb"`}},
		{"web=", []string{`"web="`, "empty port list"}},
		{"web=80:x/tcp", []string{`"web=80:x/tcp"`, `"x"`, "not a number"}},
		{"web=80/icmp", []string{`"icmp"`, "unknown protocol"}},
		{"web=80,80", []string{"both listen on 80/tcp"}},
		{"web=web=80", []string{`"web=80"`, "not a number"}},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			name, ports, err := ParseService(tc.in)
			checkErr(t, err, tc.want...)
			if name != "" || ports != nil {
				t.Errorf("got %q %v along with the error", name, ports)
			}
		})
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"a", "A", "0", "web", "web-1", "web_1", "web.1", "a..b", "a--", "project_web_1"} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", "_a", ".a", "a b", "a/b", "a:b", "a=b", "a,b", "a@b", "a\x00", "ä"} {
		if err := ValidateName(bad); err == nil {
			t.Errorf("ValidateName(%q) = nil, want error", bad)
		}
	}
}

func TestParseBackend(t *testing.T) {
	mac := func(s string) net.HardwareAddr {
		m, err := net.ParseMAC(s)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	tests := []struct {
		in   string
		want StaticBackend
	}{
		{"web=10.0.0.2", StaticBackend{"web", netip.MustParseAddr("10.0.0.2"), nil, 1}},
		{"web=10.0.0.3@de:ad:be:ef:00:03,weight=2", StaticBackend{"web", netip.MustParseAddr("10.0.0.3"), mac("de:ad:be:ef:00:03"), 2}},
		{"web=10.0.0.3@DE-AD-BE-EF-00-03", StaticBackend{"web", netip.MustParseAddr("10.0.0.3"), mac("de:ad:be:ef:00:03"), 1}},
		{"web=10.0.0.3@02:42:ac:11:00:02", StaticBackend{"web", netip.MustParseAddr("10.0.0.3"), mac("02:42:ac:11:00:02"), 1}},
		{"web=10.0.0.4,weight=0", StaticBackend{"web", netip.MustParseAddr("10.0.0.4"), nil, 0}},
		{"web=10.0.0.4,weight=4294967295", StaticBackend{"web", netip.MustParseAddr("10.0.0.4"), nil, 4294967295}},
		{"web=10.0.0.4,weight=007", StaticBackend{"web", netip.MustParseAddr("10.0.0.4"), nil, 7}},
		{"dns.v2=192.168.1.1", StaticBackend{"dns.v2", netip.MustParseAddr("192.168.1.1"), nil, 1}},
		{"web=169.254.0.1", StaticBackend{"web", netip.MustParseAddr("169.254.0.1"), nil, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseBackend(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got.Service != tc.want.Service || got.IP != tc.want.IP || got.Weight != tc.want.Weight ||
				got.MAC.String() != tc.want.MAC.String() || (got.MAC == nil) != (tc.want.MAC == nil) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseBackendErrors(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", []string{"missing '='"}},
		{"10.0.0.2", []string{`"10.0.0.2"`, "missing '='"}},
		{"=10.0.0.2", []string{"empty service name"}},
		{"-x=10.0.0.2", []string{`"-x"`}},
		{"web=", []string{"missing IP"}},
		{"web=@de:ad:be:ef:00:03", []string{"missing IP"}},
		{"web=,weight=1", []string{"missing IP"}},
		{"web=10.0.0", []string{`"10.0.0"`, "not an IP address"}},
		{"web=10.0.0.256", []string{`"10.0.0.256"`, "not an IP address"}},
		{"web=backend.local", []string{`"backend.local"`, "not an IP address"}},
		{"web=10.0.0.2:80", []string{`"10.0.0.2:80"`, "not an IP address"}},
		{"web=fd00::2", []string{`"fd00::2"`, "IPv6 is not supported"}},
		{"web=::ffff:10.0.0.2", []string{`"::ffff:10.0.0.2"`, "IPv6 is not supported"}},
		{"web=fe80::1%eth0", []string{`"fe80::1%eth0"`, "IPv6"}},
		{"web=0.0.0.0", []string{`"0.0.0.0"`, "not a unicast"}},
		{"web=224.0.0.1", []string{`"224.0.0.1"`, "not a unicast"}},
		{"web=255.255.255.255", []string{`"255.255.255.255"`, "not a unicast"}},
		{"web=127.0.0.1", []string{`"127.0.0.1"`, "loopback"}},
		{"web=10.0.0.2@", []string{`MAC ""`, "not a MAC address"}},
		{"web=10.0.0.2@zz:ad:be:ef:00:03", []string{`"zz:ad:be:ef:00:03"`, "not a MAC address"}},
		{"web=10.0.0.2@de:ad:be:ef:00", []string{`"de:ad:be:ef:00"`, "not a MAC address"}},
		{"web=10.0.0.2@00:00:5e:10:00:00:00:01", []string{`"00:00:5e:10:00:00:00:01"`, "6-byte"}},
		{"web=10.0.0.2@ff:ff:ff:ff:ff:ff", []string{`"ff:ff:ff:ff:ff:ff"`, "multicast/broadcast"}},
		{"web=10.0.0.2@01:00:5e:00:00:01", []string{`"01:00:5e:00:00:01"`, "multicast"}},
		{"web=10.0.0.2@00:00:00:00:00:00", []string{`"00:00:00:00:00:00"`, "all-zero"}},
		{"web=10.0.0.2@de:ad:be:ef:00:03@x", []string{`"de:ad:be:ef:00:03@x"`, "not a MAC"}},
		{"web=10.0.0.2,weight=-1", []string{`weight "-1"`, "non-negative integer"}},
		{"web=10.0.0.2,weight=two", []string{`weight "two"`, "non-negative integer"}},
		{"web=10.0.0.2,weight=1.5", []string{`weight "1.5"`, "non-negative integer"}},
		{"web=10.0.0.2,weight=", []string{`weight ""`, "non-negative integer"}},
		{"web=10.0.0.2,weight=+2", []string{`weight "+2"`}},
		{"web=10.0.0.2,weight=4294967296", []string{`weight "4294967296"`, "larger than 4294967295"}},
		{"web=10.0.0.2,weight=1,weight=2", []string{`"weight" given twice`}},
		{"web=10.0.0.2,weight", []string{`option "weight"`, "KEY=VALUE"}},
		{"web=10.0.0.2,", []string{`option ""`, "KEY=VALUE"}},
		{"web=10.0.0.2,prio=1", []string{`unknown option "prio"`}},
		{"web=10.0.0.2,Weight=1", []string{`unknown option "Weight"`}},
		{"web=10.0.0.2,weight=1,mac=de:ad:be:ef:00:03", []string{`unknown option "mac"`}},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseBackend(tc.in)
			checkErr(t, err, append([]string{"backend " + `"` + tc.in + `"`}, tc.want...)...)
			if got.Service != "" || got.IP.IsValid() || got.MAC != nil || got.Weight != 0 {
				t.Errorf("got %+v along with the error", got)
			}
		})
	}
}

func TestParseWeight(t *testing.T) {
	for in, want := range map[string]uint32{"0": 0, "1": 1, "100": 100, "4294967295": 1<<32 - 1} {
		if got, err := ParseWeight(in); err != nil || got != want {
			t.Errorf("ParseWeight(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-0", "-1", " 1", "1 ", "1e3", "0x10", "4294967296", "99999999999999999999999"} {
		if _, err := ParseWeight(bad); err == nil {
			t.Errorf("ParseWeight(%q) succeeded", bad)
		}
	}
}
