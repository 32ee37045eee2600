// Package dockerharness drives a real Docker engine from tests: static
// FROM scratch images (there is no registry), user networks and containers,
// every one of them named with a per-test unique prefix and removed in
// t.Cleanup even when the test fails.
//
// Actions go through the docker CLI (what an operator types); state is read
// back through the Engine API client in H.Client.
package dockerharness

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"golang.org/x/sys/unix"
)

// NamePrefix starts the name of everything a test creates, so leftovers of
// a crashed run are recognisable (docker ps -a --filter name=xdplbtest-).
const NamePrefix = "xdplbtest-"

// H is one test's handle on the engine.
type H struct {
	T      testing.TB
	Client *client.Client
	// Prefix is unique to this H: NamePrefix + a random tag + "-".
	Prefix string
}

// New returns a harness, or skips the test when not root. As root a missing
// engine is a failure, not a skip: CI runs as root and must not pass without
// having run these tests. scripts/docker-engine.sh starts the engine.
func New(t testing.TB) *H {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to use the Docker engine (run as root, with scripts/docker-engine.sh)")
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatalf("docker CLI not found: %v", err)
	}
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatalf("docker client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx); err != nil {
		t.Fatalf("Docker engine not reachable at %s (start it with scripts/docker-engine.sh): %v", cli.DaemonHost(), err)
	}
	t.Cleanup(func() { cli.Close() })
	var b [4]byte
	_, _ = rand.Read(b[:])
	return &H{T: t, Client: cli, Prefix: NamePrefix + hex.EncodeToString(b[:]) + "-"}
}

// Name returns Prefix+suffix.
func (h *H) Name(suffix string) string { return h.Prefix + suffix }

// Docker runs the docker CLI and returns its trimmed stdout; it fails the
// test on a non-zero exit, quoting stderr.
func (h *H) Docker(args ...string) string {
	h.T.Helper()
	out, err := h.TryDocker(args...)
	if err != nil {
		h.T.Fatal(err)
	}
	return out
}

// TryDocker is Docker without failing the test.
func (h *H) TryDocker(args ...string) (string, error) {
	return runDocker(nil, args...)
}

func runDocker(env []string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("docker", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// ModuleRoot is the directory of the repository's go.mod.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatal("not inside the xdplb module")
	}
	return filepath.Dir(gomod)
}

// GoBuildStatic builds a static (CGO_ENABLED=0) binary of a package of this
// module into dir and returns its path.
func GoBuildStatic(t testing.TB, pkg, dir string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = ModuleRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// Image builds a FROM scratch image from a Dockerfile and files copied into
// the build context (context-relative name -> source path), and removes it
// at cleanup. The tag is made unique with the prefix.
//
// `docker build` needs the buildx plugin with the 28.x client; without it
// the legacy builder is used, which is fine for FROM scratch.
func (h *H) Image(name, dockerfile string, files map[string]string) string {
	h.T.Helper()
	dir := h.T.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		h.T.Fatal(err)
	}
	for dst, src := range files {
		if err := copyFile(src, filepath.Join(dir, dst)); err != nil {
			h.T.Fatal(err)
		}
	}
	tag := h.Name(name) + ":test"
	h.T.Cleanup(func() { _, _ = h.TryDocker("image", "rm", "-f", tag) })
	_, err := runDocker(nil, "build", "-q", "-t", tag, dir)
	if err != nil && strings.Contains(err.Error(), "buildx") {
		_, err = runDocker([]string{"DOCKER_BUILDKIT=0"}, "build", "-q", "-t", tag, dir)
	}
	if err != nil {
		h.T.Fatal(err)
	}
	return tag
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, b, fi.Mode().Perm())
}

// WhoamiImage builds cmd/whoami (the Go build cache makes repeats cheap) into a FROM scratch
// image whose entrypoint is `whoami` and default command `serve`, with a
// 1 s HEALTHCHECK on /health (toggle it with `docker exec C whoami sick|well`).
func (h *H) WhoamiImage() string {
	h.T.Helper()
	bin := GoBuildStatic(h.T, "./cmd/whoami", h.T.TempDir())
	const dockerfile = `FROM scratch
COPY whoami /whoami
HEALTHCHECK --interval=1s --timeout=1s --retries=1 CMD ["/whoami", "check"]
ENTRYPOINT ["/whoami"]
CMD ["serve"]
`
	return h.Image("whoami", dockerfile, map[string]string{"whoami": bin})
}

// HoldImage builds cmd/xdplb-hold into a FROM scratch image like the
// Dockerfile's hold stage: the holder of a balancer's network namespace.
func (h *H) HoldImage() string {
	h.T.Helper()
	bin := GoBuildStatic(h.T, "./cmd/xdplb-hold", h.T.TempDir())
	const dockerfile = `FROM scratch
COPY xdplb-hold /xdplb-hold
ENTRYPOINT ["/xdplb-hold"]
`
	return h.Image("xdplb-hold", dockerfile, map[string]string{"xdplb-hold": bin})
}

// BusyboxImage is a FROM scratch image with the static busybox as
// /bin/busybox, running `sleep` forever by default.
func (h *H) BusyboxImage() string {
	h.T.Helper()
	const dockerfile = `FROM scratch
COPY busybox /bin/busybox
ENTRYPOINT ["/bin/busybox"]
CMD ["sleep", "2147483647"]
`
	return h.Image("busybox", dockerfile, map[string]string{"busybox": "/bin/busybox"})
}

// Network creates a bridge network (extra args go to `docker network
// create`, e.g. "--subnet", "10.201.0.0/24") and removes it at cleanup.
func (h *H) Network(name string, args ...string) string {
	h.T.Helper()
	full := h.Name(name)
	h.T.Cleanup(func() { _, _ = h.TryDocker("network", "rm", full) })
	h.Docker(append(append([]string{"network", "create"}, args...), full)...)
	return full
}

// Run runs `docker run -d --name PREFIX+name ARGS...` and removes the
// container at cleanup. args are docker run flags, then the image and its
// command. It returns the full container ID.
func (h *H) Run(name string, args ...string) string {
	h.T.Helper()
	full := h.Name(name)
	h.T.Cleanup(func() { _, _ = h.TryDocker("rm", "-f", "-v", full) })
	return h.Docker(append([]string{"run", "-d", "--name", full}, args...)...)
}

// Create is Run with `docker create`: the container is not started.
func (h *H) Create(name string, args ...string) string {
	h.T.Helper()
	full := h.Name(name)
	h.T.Cleanup(func() { _, _ = h.TryDocker("rm", "-f", "-v", full) })
	return h.Docker(append([]string{"create", "--name", full}, args...)...)
}

// Inspect returns the engine's view of a container.
func (h *H) Inspect(nameOrID string) container.InspectResponse {
	h.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ins, err := h.Client.ContainerInspect(ctx, nameOrID)
	if err != nil {
		h.T.Fatalf("inspect %s: %v", nameOrID, err)
	}
	return ins
}

// WaitHealth waits until the container's health status is want.
func (h *H) WaitHealth(nameOrID, want string, timeout time.Duration) {
	h.T.Helper()
	deadline := time.Now().Add(timeout)
	got := ""
	for time.Now().Before(deadline) {
		ins := h.Inspect(nameOrID)
		if ins.State != nil && ins.State.Health != nil {
			got = string(ins.State.Health.Status)
			if got == want {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.T.Fatalf("%s: health %q after %s, want %q", nameOrID, got, timeout, want)
}

// Logs returns a container's output, for failure messages.
func (h *H) Logs(nameOrID string) string {
	out, err := exec.Command("docker", "logs", "--tail", "50", nameOrID).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("(docker logs %s: %v)", nameOrID, err)
	}
	return string(out)
}

// XdplbImage packs a static xdplb binary (e.g. bin/xdplb from `make build`)
// into a FROM scratch image with /xdplb as entrypoint. Run it with
// XdplbRunArgs: `privileged` fails on these machines (PLATFORM.md).
func (h *H) XdplbImage(bin string) string {
	h.T.Helper()
	const dockerfile = `FROM scratch
COPY xdplb /xdplb
ENTRYPOINT ["/xdplb"]
`
	return h.Image("xdplb", dockerfile, map[string]string{"xdplb": bin})
}

// XdplbRunArgs are the docker run flags the load balancer needs: the
// capabilities to load and attach XDP programs, its own ephemeral ports
// outside the default SNAT range, and the engine socket.
// (":ro" keeps the socket file from being replaced; it does not limit the
// API, which is why the watcher is careful to only read.)
func (h *H) XdplbRunArgs() []string {
	return append(h.XdplbJoinArgs(), "--sysctl", "net.ipv4.ip_local_port_range=61000 65535")
}

// XdplbJoinArgs is XdplbRunArgs for a balancer that joins another
// container's network namespace (--network container:X): the namespace's
// sysctls are that container's to set, and Docker refuses them here.
func (h *H) XdplbJoinArgs() []string {
	sock := strings.TrimPrefix(h.Client.DaemonHost(), "unix://")
	return []string{"--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "-v", sock + ":/var/run/docker.sock:ro"}
}

// Exec runs a command in a running container and returns its output.
func (h *H) Exec(nameOrID string, cmd ...string) string {
	h.T.Helper()
	return h.Docker(append([]string{"exec", nameOrID}, cmd...)...)
}

// IP returns a container's IPv4 address on a network.
func (h *H) IP(nameOrID, network string) string {
	h.T.Helper()
	ins := h.Inspect(nameOrID)
	if ins.NetworkSettings == nil || ins.NetworkSettings.Networks[network] == nil {
		h.T.Fatalf("%s is not on network %s", nameOrID, network)
	}
	return ins.NetworkSettings.Networks[network].IPAddress
}

// EngineRestartEnv must be "1" for tests that restart dockerd: that stops
// every container on the engine (there is no live-restore), so they run
// only where nothing else uses it. scripts/test.sh sets it for its last,
// lone group.
const EngineRestartEnv = "XDPLB_TEST_DOCKERD_RESTART"

// RequireEngineRestart skips t unless restarting the engine is allowed.
func RequireEngineRestart(t testing.TB) {
	t.Helper()
	if os.Getenv(EngineRestartEnv) != "1" {
		t.Skipf("restarts the shared dockerd, stopping every container on it: set %s=1 to run", EngineRestartEnv)
	}
}

// HostBPFFS makes sure the host has a BPF filesystem at /sys/fs/bpf, as
// scripts/host-bpffs.sh does for `make demo`: the compose files bind it
// into the balancer, whose pinned state must outlive its container. It
// stays mounted (a host with systemd has it anyway).
func HostBPFFS(t testing.TB) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/bpf", &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return
	}
	if err := unix.Mount("bpf", "/sys/fs/bpf", "bpf", 0, ""); err != nil {
		t.Fatalf("mounting a BPF filesystem at /sys/fs/bpf on the host: %v", err)
	}
}

// StateBase is where a balancer pins its state by default (the daemon's
// StateBase); the compose files bind the host's.
const StateBase = "/sys/fs/bpf/xdplb"

// RemovePinnedState removes the pinned state of a Compose project's
// balancers, as `make demo-down` does: `docker compose down` leaves it for
// the next balancer's start to sweep, and with it their programs stay
// loaded.
func RemovePinnedState(t testing.TB, project string) {
	t.Helper()
	dirs, _ := filepath.Glob(filepath.Join(StateBase, "docker-"+strings.ReplaceAll(project, ".", "_")+"-*"))
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			t.Errorf("removing pinned state %s: %v", d, err)
		}
	}
}
