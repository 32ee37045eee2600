package dataplane

import (
	"errors"
	"strings"
	"testing"
)

// TestAttachRefusesMixedModes: one interface native and another generic
// would make the program complete partial checksums on the generic one
// too (the flag is program-wide), so the second attach is refused with an
// error that names both interfaces and modes, and changes nothing.
func TestAttachRefusesMixedModes(t *testing.T) {
	lbtRequireRoot(t)
	lbtNetns(t, func() {
		a, _ := lbtVeth(t, "xlbx0", "xlbx1")
		b, _ := lbtVeth(t, "xlby0", "xlby1")
		d, err := Load(Options{Sizes: Sizes{Flows: 1024}})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if err := d.Attach(a, ModeGeneric, false); err != nil {
			t.Fatalf("generic attach: %v", err)
		}
		err = d.Attach(b, ModeNative, false)
		if !errors.Is(err, ErrMixedModes) {
			t.Fatalf("native attach beside a generic one: got %v, want ErrMixedModes", err)
		}
		for _, want := range []string{"xlby0", "native", "xlbx0", "generic"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("refusal %q does not name %q", err, want)
			}
		}
		if st := lbtAttached(t, b); st != (xdpState{}) {
			t.Errorf("refused attach left %+v on xlby0", st)
		}
		// The same mode is fine, and an interface may change its own mode
		// when it is the only one.
		if err := d.Attach(b, ModeGeneric, false); err != nil {
			t.Fatalf("second generic attach: %v", err)
		}
		must(t, d.Detach(b))
		if err := d.Attach(a, ModeNative, false); err != nil {
			t.Fatalf("switching the only interface to native: %v", err)
		}
		if got := d.Attached(); len(got) != 1 || got[a] != ModeNative {
			t.Errorf("Attached() = %v", got)
		}
	})
}
