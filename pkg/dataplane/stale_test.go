package dataplane

import (
	"os"
	"path/filepath"
	"testing"
)

func TestFdinfoHas(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fdinfo")
	if err := os.WriteFile(p, []byte("pos:\t0\nflags:\t02000002\nprog_type:\t6\nprog_id:\t42\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !fdinfoHas(p, "prog_id:\t42") {
		t.Error("prog_id 42 not found")
	}
	if fdinfoHas(p, "prog_id:\t4") || fdinfoHas(filepath.Join(t.TempDir(), "none"), "prog_id:\t42") {
		t.Error("false match")
	}
	// Nobody holds a program id that does not exist.
	if ProgramHeld(1<<31 - 1) {
		t.Error("a nonexistent program is held")
	}
}
