package reconcile

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/sirupsen/logrus/hooks/test"

	"github.com/xdplb/xdplb/pkg/lbmodel"
)

// taggingDP is fakeDP with the owner tags a restarted balancer adopts by.
type taggingDP struct {
	*fakeDP
	svcTags, beTags map[uint32]uint64
}

func (f *taggingDP) SetServiceTag(id uint32, tag uint64) error { return setTag(f.svcTags, id, tag) }
func (f *taggingDP) SetBackendTag(id uint32, tag uint64) error { return setTag(f.beTags, id, tag) }
func (f *taggingDP) ServiceTags() (map[uint32]uint64, error)   { return clone(f.svcTags), nil }
func (f *taggingDP) BackendTags() (map[uint32]uint64, error)   { return clone(f.beTags), nil }

func setTag(m map[uint32]uint64, id uint32, tag uint64) error {
	if tag == 0 {
		delete(m, id)
	} else {
		m[id] = tag
	}
	return nil
}

func clone(m map[uint32]uint64) map[uint32]uint64 {
	out := map[uint32]uint64{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// TestAdoptKeepsIDs: a second reconciler over the maps the first one
// programmed (a restarted balancer) gives the backends that still exist
// their ids, without resetting their counters or purging their flows; a
// backend and a service gone while it was down are removed with their
// flows; a backend new since gets a fresh id.
func TestAdoptKeepsIDs(t *testing.T) {
	dp := &taggingDP{fakeDP: newFake(), svcTags: map[uint32]uint64{}, beTags: map[uint32]uint64{}}
	log, _ := test.NewNullLogger()
	log.SetOutput(io.Discard)
	first := New(dp, fakeNet{}, log, Options{MaglevMinSize: 7})
	dns := lbmodel.Service{Name: "dns", Port: lbmodel.Port{Listen: 53, Target: 53, Proto: lbmodel.UDP},
		VIPs: []netip.Addr{vip}, Backends: []lbmodel.Backend{be("d1", "10.0.1.1", 1)}}
	st := web(be("a", "10.0.0.11", 1), be("b", "10.0.0.12", 1), be("c", "10.0.0.13", 0))
	st.Services = append(st.Services, dns)
	if _, err := first.Apply(st); err != nil {
		t.Fatal(err)
	}
	svcNames, ids := first.Snapshot()
	svcID := map[string]uint32{}
	for id, sv := range svcNames {
		svcID[sv.Name] = id
	}
	idOf := map[string]uint32{}
	for id, b := range ids {
		idOf[b.Service+"/"+b.Name] = id
	}
	for id := range dp.backends {
		dp.flows[id] = 5
		dp.beStats[id] = 100
	}

	// The restart: b and the dns service are gone, d is new.
	log2, hook := test.NewNullLogger()
	log2.SetOutput(io.Discard)
	dp.ops = nil
	second := New(dp, fakeNet{}, log2, Options{MaglevMinSize: 7})
	svcs, bes, err := second.Adopt()
	if err != nil || svcs != 2 || bes != 4 {
		t.Fatalf("Adopt: %d services %d backends %v, want 2 and 4", svcs, bes, err)
	}
	tableBefore := dp.tables[svcID["web"]]
	if _, err := second.Apply(web(be("a", "10.0.0.11", 1), be("c", "10.0.0.13", 1), be("d", "10.0.0.14", 1))); err != nil {
		t.Fatal(err)
	}
	_, got := second.Snapshot()
	gotID := map[string]uint32{}
	for id, b := range got {
		gotID[b.Service+"/"+b.Name] = id
	}
	for _, name := range []string{"web/a", "web/c"} {
		if gotID[name] != idOf[name] {
			t.Errorf("%s: id %d after the restart, was %d", name, gotID[name], idOf[name])
		}
		if dp.flows[idOf[name]] != 5 || dp.beStats[idOf[name]] != 100 {
			t.Errorf("%s: flows %d counters %d after adoption, want 5 and 100 kept", name, dp.flows[idOf[name]], dp.beStats[idOf[name]])
		}
	}
	for _, gone := range []string{"web/b", "dns/d1"} {
		id := idOf[gone]
		if _, ok := dp.backends[id]; ok {
			t.Errorf("%s (id %d) gone while the balancer was down, but its slot stayed", gone, id)
		}
		if n, ok := dp.flows[id]; ok {
			t.Errorf("%s (id %d): %d flows not purged", gone, id, n)
		}
	}
	if _, ok := dp.tables[svcID["dns"]]; ok || len(dp.services) != 1 {
		t.Errorf("the dns service was not removed: tables %v services %v", dp.tables, dp.services)
	}
	if d := gotID["web/d"]; d == 0 || d == idOf["web/a"] || d == idOf["web/c"] {
		t.Errorf("new backend d got id %d, colliding with an adopted one (%v)", d, idOf)
	}
	if slices.Equal(tableBefore, dp.tables[svcID["web"]]) {
		t.Error("the web table was not rebuilt for the new backend set")
	}
	ops := strings.Join(dp.ops, "\n")
	if strings.Contains(ops, "svcstats0 "+fmt.Sprint(svcID["web"])) || strings.Contains(ops, "bestats0 "+fmt.Sprint(idOf["web/a"])) {
		t.Errorf("counters of an adopted id were reset:\n%s", ops)
	}
	adopted := 0
	for _, e := range hook.AllEntries() {
		if e.Message == "backend adopted" {
			adopted++
		}
	}
	if adopted != 2 {
		t.Errorf("%d \"backend adopted\" lines, want 2 (a and c)", adopted)
	}
	// Idempotent afterwards: nothing to adopt, nothing to change.
	if res, err := second.Apply(web(be("a", "10.0.0.11", 1), be("c", "10.0.0.13", 1), be("d", "10.0.0.14", 1))); err != nil || res.Changes != 0 {
		t.Errorf("second Apply after adoption: %+v %v, want no changes", res, err)
	}
}
