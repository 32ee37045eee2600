package dataplane

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ProgramHeld reports whether any live process holds an fd of the BPF
// program with this id. An xdplb that died without detaching leaves its
// program attached (the interface holds it, no process does); a running
// xdplb holds its program's fd. That is how we tell a stale program of ours,
// safe to replace, from another instance's, which is not.
func ProgramHeld(id uint32) bool {
	want := fmt.Sprintf("prog_id:\t%d", id)
	self := fmt.Sprint(os.Getpid())
	infos, _ := filepath.Glob("/proc/[0-9]*/fdinfo/*")
	for _, p := range infos {
		if strings.HasPrefix(p, "/proc/"+self+"/") {
			continue
		}
		if fdinfoHas(p, want) {
			return true
		}
	}
	return false
}

func fdinfoHas(path, line string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if sc.Text() == line {
			return true
		}
	}
	return false
}
