package e2e_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/xdplb/xdplb/test/dockerharness"
)

// TestComposeProjectScope: two Compose projects on one shared external
// network, each with a balancer and a `web` service of the same name. Each
// balancer serves only its own project's replicas (without scoping the two
// `web` services would merge into one), and neither logs anything about
// the other project's containers.
func TestComposeProjectScope(t *testing.T) {
	h := dockerharness.New(t)
	root := dockerharness.ModuleRoot(t)
	ensureImages(t, root)
	shared := h.Network("shared")
	file := filepath.Join(root, "test", "e2e", "docker-compose.scope.yml")
	env := []string{"XDPLB_SHARED_NET=" + shared}
	ps := []*project{newProject(t, h, root, env, file), newProject(t, h, root, env, file)}
	for _, p := range ps {
		p.up()
	}
	for i, p := range ps {
		other := ps[1-i]
		lb, mine, theirs := p.one("lb"), p.containers("web"), other.containers("web")
		if len(mine) != 2 || len(theirs) != 2 {
			t.Fatalf("want 2 web replicas per project, have %v and %v", names(mine), names(theirs))
		}
		ip := h.IP(lb.ID, shared)
		tl := newTally()
		if err := p.clientRequests("client", "--url=http://"+ip+":80/", 200, 10, tl); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: client -> its balancer %s: %s", p.name, ip, tl)
		if ok, failed := tl.counts(); failed > 0 || ok != 200 {
			t.Errorf("%s: %d ok, %d failed of 200", p.name, ok, failed)
		}
		requireEveryReplica(t, p.name, tl, mine)
		for _, r := range theirs {
			if tl.answered(r.ShortID()) {
				t.Errorf("%s's balancer sent traffic to %s of project %s", p.name, r.Name, other.name)
			}
		}
		log := p.lbLog()
		if strings.Contains(log, other.name) {
			t.Errorf("%s's balancer logs the other project's containers:\n%s", p.name, grepLog(log, other.name))
		}
		if !strings.Contains(log, `project=`+p.name) {
			t.Errorf("%s's balancer does not say it serves its own project:\n%s", p.name, lastLines(log, 30))
		}
	}
}

func grepLog(log, sub string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return lastLines(strings.Join(out, "\n"), 10)
}
