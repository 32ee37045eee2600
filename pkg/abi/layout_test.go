package abi_test

import (
	"bytes"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/xdplb/xdplb/pkg/abi"
	"github.com/xdplb/xdplb/pkg/bpfobj"
)

// The structs of bpf/shared_structs.h and their Go mirrors. Each must be
// used by a map of the object, or clang emits no BTF for it.
var mirrors = []struct {
	c   string
	goT any
}{
	{"svc_key", abi.SvcKey{}},
	{"svc_info", abi.SvcInfo{}},
	{"backend", abi.Backend{}},
	{"iface_info", abi.IfaceInfo{}},
	{"flow_key", abi.FlowKey{}},
	{"ct_fwd", abi.CTFwd{}},
	{"ct_rev", abi.CTRev{}},
	{"lb_config", abi.Config{}},
	{"stats", abi.Stats{}},
	{"port_bits", abi.PortBits{}},
	{"lb_meta", abi.Meta{}},
}

func objectBTF(t *testing.T) *btf.Spec {
	t.Helper()
	if len(bpfobj.XDPLB) == 0 {
		t.Fatal("pkg/bpfobj/xdplb.bpf.o is empty: run `make bpf`")
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(bpfobj.XDPLB))
	if err != nil {
		t.Fatalf("reading BTF of the embedded xdplb object: %v", err)
	}
	return spec
}

// normName is how a C member name is spelled in the mirror, compared without
// case or underscores: last_seen_ns ~ LastSeenNs, snat_ip ~ SNATIP.
func normName(s string) string {
	return strings.ToLower(strings.ReplaceAll(s, "_", ""))
}

// TestLayoutMatchesBTF compares every shared struct as clang laid it out
// (size, members in order, each member's name, offset and size) with its
// Go mirror, so a field added, moved or resized on one side only fails.
func TestLayoutMatchesBTF(t *testing.T) {
	spec := objectBTF(t)
	for _, m := range mirrors {
		t.Run(m.c, func(t *testing.T) {
			var st *btf.Struct
			if err := spec.TypeByName(m.c, &st); err != nil {
				t.Fatalf("struct %s not in the object's BTF (is it used by a map?): %v", m.c, err)
			}
			for _, e := range compareLayout(st, reflect.TypeOf(m.goT)) {
				t.Error(e)
			}
		})
	}
}

// compareLayout lists every difference between a C struct and its mirror.
func compareLayout(st *btf.Struct, gt reflect.Type) []string {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if uintptr(st.Size) != gt.Size() {
		bad("size: C struct %s is %d bytes, Go %s is %d", st.Name, st.Size, gt.Name(), gt.Size())
	}
	if len(st.Members) != gt.NumField() {
		bad("members: C struct %s has %d, Go %s has %d", st.Name, len(st.Members), gt.Name(), gt.NumField())
	}
	for i := 0; i < min(len(st.Members), gt.NumField()); i++ {
		cm, gf := st.Members[i], gt.Field(i)
		if cm.BitfieldSize != 0 {
			bad("%s.%s is a bitfield; the ABI allows none", st.Name, cm.Name)
			continue
		}
		csize, err := btf.Sizeof(cm.Type)
		if err != nil {
			bad("%s.%s: size: %v", st.Name, cm.Name, err)
			continue
		}
		if normName(cm.Name) != normName(gf.Name) {
			bad("member %d: C %s.%s vs Go %s.%s: names do not correspond (order differs?)",
				i, st.Name, cm.Name, gt.Name(), gf.Name)
		}
		if off := cm.Offset.Bytes(); uintptr(off) != gf.Offset {
			bad("%s.%s at offset %d, Go %s.%s at %d", st.Name, cm.Name, off, gt.Name(), gf.Name, gf.Offset)
		}
		if uintptr(csize) != gf.Type.Size() {
			bad("%s.%s is %d bytes, Go %s.%s is %d", st.Name, cm.Name, csize, gt.Name(), gf.Name, gf.Type.Size())
		}
		if arr, ok := btf.UnderlyingType(cm.Type).(*btf.Array); ok {
			if gf.Type.Kind() != reflect.Array || uint32(gf.Type.Len()) != arr.Nelems {
				bad("%s.%s is an array of %d, Go %s.%s is %s", st.Name, cm.Name, arr.Nelems, gt.Name(), gf.Name, gf.Type)
			}
		}
	}
	return errs
}

// TestLayoutCatchesMovedField proves the comparison can fail: a mirror of
// struct backend with two fields swapped (same size overall) is rejected.
func TestLayoutCatchesMovedField(t *testing.T) {
	var st *btf.Struct
	if err := objectBTF(t).TypeByName("backend", &st); err != nil {
		t.Fatal(err)
	}
	type movedBackend struct {
		IfIndex uint32
		IP      uint32
		MAC     [6]byte
		Flags   uint16
		LBMAC   [6]byte
		Pad     uint16
		SNATIP  uint32
	}
	type resizedBackend struct {
		IP      uint32
		IfIndex uint32
		MAC     [4]byte
		Flags   uint32
		LBMAC   [6]byte
		Pad     uint16
		SNATIP  uint32
	}
	if errs := compareLayout(st, reflect.TypeOf(abi.Backend{})); len(errs) != 0 {
		t.Fatalf("the real mirror should match: %v", errs)
	}
	if errs := compareLayout(st, reflect.TypeOf(movedBackend{})); len(errs) == 0 {
		t.Error("swapping IP and IfIndex went unnoticed")
	}
	if errs := compareLayout(st, reflect.TypeOf(resizedBackend{})); len(errs) == 0 {
		t.Error("shrinking MAC and growing Flags went unnoticed")
	}
}

// TestReasonsMatchBTF checks enum xdplb_reason, name by name, against the
// abi.Reason constants and their metric names.
func TestReasonsMatchBTF(t *testing.T) {
	spec := objectBTF(t)
	var enum *btf.Enum
	if err := spec.TypeByName("xdplb_reason", &enum); err != nil {
		t.Fatalf("enum xdplb_reason not in the object's BTF (the C side must use the type, e.g. as a parameter of a non-inlined function or in a map value): %v", err)
	}
	want := map[string]abi.Reason{
		"XDPLB_R_PASS_NOT_IPV4":         abi.ReasonPassNotIPv4,
		"XDPLB_R_PASS_NOT_OURS":         abi.ReasonPassNotOurs,
		"XDPLB_R_PASS_MALFORMED":        abi.ReasonPassMalformed,
		"XDPLB_R_PASS_FRAGMENT":         abi.ReasonPassFragment,
		"XDPLB_R_DROP_FRAGMENT":         abi.ReasonDropFragment,
		"XDPLB_R_PASS_NO_BACKEND":       abi.ReasonPassNoBackend,
		"XDPLB_R_DROP_NO_SNAT_PORT":     abi.ReasonDropNoSNATPort,
		"XDPLB_R_DROP_NO_IFACE":         abi.ReasonDropNoIface,
		"XDPLB_R_FWD_NEW_FLOW":          abi.ReasonFwdNewFlow,
		"XDPLB_R_FWD":                   abi.ReasonFwd,
		"XDPLB_R_REPLY":                 abi.ReasonReply,
		"XDPLB_R_ICMP_ERROR_TO_CLIENT":  abi.ReasonICMPErrorToClient,
		"XDPLB_R_PASS_ICMP":             abi.ReasonPassICMP,
		"XDPLB_R_DROP_BACKEND_GONE":     abi.ReasonDropBackendGone,
		"XDPLB_R_PASS_TOO_BIG":          abi.ReasonPassTooBig,
		"XDPLB_R_ICMP_ERROR_TO_BACKEND": abi.ReasonICMPErrorToBackend,
		"XDPLB_R_MAX":                   abi.ReasonMax,
	}
	seen := map[string]bool{}
	for _, v := range enum.Values {
		seen[v.Name] = true
		g, ok := want[v.Name]
		if !ok {
			t.Errorf("C reason %s = %d has no Go constant (add it to pkg/abi and to this table)", v.Name, v.Value)
			continue
		}
		if uint64(g) != v.Value {
			t.Errorf("C %s = %d, Go = %d", v.Name, v.Value, g)
		}
		if v.Name != "XDPLB_R_MAX" {
			if name := strings.ToLower(strings.TrimPrefix(v.Name, "XDPLB_R_")); g.String() != name {
				t.Errorf("metric name of %s is %q, want %q", v.Name, g.String(), name)
			}
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("Go expects C reason %s, which the object does not define", name)
		}
	}
}

// TestLayoutVersionMatchesHeader: the version stamp of pinned state is a
// #define, which leaves no trace in BTF, so the header is read as text. A
// layout change bumped on one side only would let one side adopt state the
// other wrote under another layout.
func TestLayoutVersionMatchesHeader(t *testing.T) {
	src, err := os.ReadFile("../../bpf/shared_structs.h")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^#define XDPLB_LAYOUT_VERSION (\d+)\b`).FindSubmatch(src)
	if m == nil {
		t.Fatal("bpf/shared_structs.h defines no XDPLB_LAYOUT_VERSION")
	}
	if got := string(m[1]); got != fmt.Sprint(abi.LayoutVersion) {
		t.Errorf("XDPLB_LAYOUT_VERSION is %s in C, %d in pkg/abi", got, abi.LayoutVersion)
	}
}
