// Package dataplane is the user-space half of the XDP data path: it loads the
// embedded BPF object through libbpfgo, attaches and detaches it, and offers
// typed access to every map (services, Maglev tables, backends, interfaces,
// config, conntrack, counters), plus conntrack garbage collection and
// BPF_PROG_TEST_RUN for tests and benchmarks.
//
// All structs crossing the boundary are the pkg/abi mirrors of
// bpf/shared_structs.h; Load refuses an object whose maps disagree with them
// in type, key size or value size, so a stale object cannot corrupt maps.
//
// Map operations are single syscalls and safe for concurrent use. Attach,
// Detach and Close act on interfaces in the calling thread's network
// namespace.
package dataplane

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"unsafe"

	bpf "github.com/aquasecurity/libbpfgo"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/pkg/abi"
	"github.com/xdplb/xdplb/pkg/bpfobj"
)

// ProgramName is the XDP entry point in the object (SEC("xdp")).
const ProgramName = "xdplb_main"

// Map names: the contract with bpf/maps.h.
const (
	mapServices     = "services"
	mapMaglevOuter  = "maglev_outer"
	mapBackends     = "backends"
	mapIfaces       = "ifaces"
	mapCTFwd        = "ct_fwd"
	mapCTRev        = "ct_rev"
	mapConfig       = "config"
	mapPortFilter   = "port_filter"
	mapSvcStats     = "svc_stats"
	mapBackendStats = "backend_stats"
	mapReasons      = "reasons"
	mapMeta         = "meta"
	mapSvcTags      = "svc_tags"
	mapBackendTags  = "backend_tags"
)

// bpfFInnerMap is BPF_F_INNER_MAP: inner maps of one outer map may then
// differ in max_entries, which is what lets every service have its own M.
const bpfFInnerMap = 1 << 12

// Sizes resizes maps before load. Zero keeps the object's default.
type Sizes struct {
	// Flows is the capacity of each conntrack map (ct_fwd and ct_rev);
	// default abi.MaxFlows. Both maps are LRU, so this bounds memory, not
	// correctness: when full, the coldest flows are evicted.
	Flows int
	// Services is how many service ids exist (one per listen port and
	// protocol of a service); default abi.MaxServices. The VIP map holds
	// VIPsPerService times as many keys.
	Services int
	// Backends is how many backend slots exist; default abi.MaxBackends.
	Backends int
}

// VIPsPerService is the services map's room per service id: a service
// answers on one VIP per attached interface.
const VIPsPerService = 16

// Options configures Load.
type Options struct {
	Sizes Sizes
	// Object is the BPF ELF object; default bpfobj.XDPLB.
	Object []byte
	// PinDir, on a BPF filesystem, pins every map so that the state
	// outlives the process, and adopts what a previous instance pinned
	// there when it is compatible (pin.go). "" pins nothing.
	PinDir string
	// NetnsCookie is stamped on pinned state, which another namespace
	// then refuses; 0 lets the state move (a restarted container).
	NetnsCookie uint64
}

// Dataplane is a loaded xdplb object: its program and maps, and the
// interfaces this process attached it to.
type Dataplane struct {
	obj *object

	services, maglevOuter, backends, ifaces *bpf.BPFMap
	ctFwd, ctRev, config, portFilter        *bpf.BPFMap
	svcStats, backendStats, reasons         *bpf.BPFMap
	meta, svcTags, backendTags              *bpf.BPFMap

	pins PinResult

	// inner describes the Maglev inner-map template, recorded before load
	// because libbpf destroys the template once the outer map exists. New
	// inner maps must match its type, key/value size and flags, or the
	// kernel refuses to put them into maglev_outer.
	inner bpf.BPFMapInfo

	mu       sync.Mutex
	attached map[int]Mode // ifindex -> mode we attached in
	closed   bool

	// slotMu serialises the writers of backends and ifaces, so that every
	// backend slot's copy of its interface (abi.Backend LBMAC, SNATIP)
	// matches the ifaces map whatever order they are called in.
	slotMu sync.Mutex

	// filterMu guards ports, the port_filter bits set so far: the map's
	// contents, kept here so that only changed entries are written.
	filterMu sync.Mutex
	ports    [abi.PortWords]abi.PortBits
}

// mapSpec is what Load checks every map against.
type mapSpec struct {
	name      string
	typ       bpf.MapType
	keySize   uintptr
	valueSize uintptr
	dst       **bpf.BPFMap
}

func (d *Dataplane) specs() []mapSpec {
	u32 := unsafe.Sizeof(uint32(0))
	return []mapSpec{
		{mapServices, bpf.MapTypeHash, unsafe.Sizeof(abi.SvcKey{}), unsafe.Sizeof(abi.SvcInfo{}), &d.services},
		{mapMaglevOuter, bpf.MapTypeArrayOfMaps, u32, u32, &d.maglevOuter},
		{mapBackends, bpf.MapTypeArray, u32, unsafe.Sizeof(abi.Backend{}), &d.backends},
		{mapIfaces, bpf.MapTypeHash, u32, unsafe.Sizeof(abi.IfaceInfo{}), &d.ifaces},
		{mapCTFwd, bpf.MapTypeLRUHash, unsafe.Sizeof(abi.FlowKey{}), unsafe.Sizeof(abi.CTFwd{}), &d.ctFwd},
		{mapCTRev, bpf.MapTypeHash, unsafe.Sizeof(abi.FlowKey{}), unsafe.Sizeof(abi.CTRev{}), &d.ctRev},
		{mapConfig, bpf.MapTypeArray, u32, unsafe.Sizeof(abi.Config{}), &d.config},
		{mapPortFilter, bpf.MapTypeArray, u32, unsafe.Sizeof(abi.PortBits{}), &d.portFilter},
		{mapSvcStats, bpf.MapTypePerCPUArray, u32, unsafe.Sizeof(abi.Stats{}), &d.svcStats},
		{mapBackendStats, bpf.MapTypePerCPUArray, u32, unsafe.Sizeof(abi.Stats{}), &d.backendStats},
		{mapReasons, bpf.MapTypePerCPUArray, u32, unsafe.Sizeof(uint64(0)), &d.reasons},
		{mapMeta, bpf.MapTypeArray, u32, unsafe.Sizeof(abi.Meta{}), &d.meta},
		{mapSvcTags, bpf.MapTypeArray, u32, unsafe.Sizeof(uint64(0)), &d.svcTags},
		{mapBackendTags, bpf.MapTypeArray, u32, unsafe.Sizeof(uint64(0)), &d.backendTags},
	}
}

// Load opens the object, checks its maps against pkg/abi, applies Sizes and
// loads program and maps into the kernel. It attaches nothing.
func Load(opts Options) (*Dataplane, error) {
	if opts.Sizes.Flows < 0 || int64(opts.Sizes.Flows) > int64(^uint32(0)) {
		return nil, fmt.Errorf("loading xdplb: flow table size %d out of range", opts.Sizes.Flows)
	}
	// Ids are u32 and a service id also indexes the outer Maglev map; a
	// million of either is far past any sane deployment.
	if opts.Sizes.Services < 0 || opts.Sizes.Services > 1<<20 {
		return nil, fmt.Errorf("loading xdplb: service count %d out of range 1..%d", opts.Sizes.Services, 1<<20)
	}
	if opts.Sizes.Backends < 0 || opts.Sizes.Backends > 1<<20 {
		return nil, fmt.Errorf("loading xdplb: backend count %d out of range 1..%d", opts.Sizes.Backends, 1<<20)
	}
	image := opts.Object
	if image == nil {
		image = bpfobj.XDPLB
	}
	d := &Dataplane{attached: map[int]Mode{}}
	specs := d.specs()
	obj, err := loadObject(image, ProgramName, func(m *bpf.Module) error {
		for _, s := range specs {
			bm, err := m.GetMap(s.name)
			if err != nil {
				return fmt.Errorf("object has no map %q: %w", s.name, err)
			}
			if err := checkMap(bm, s); err != nil {
				return err
			}
		}
		// ReasonCounts reads exactly abi.ReasonMax counters.
		if reasons, _ := m.GetMap(mapReasons); reasons.MaxEntries() != uint32(abi.ReasonMax) {
			return fmt.Errorf("map %s has %d counters but pkg/abi knows %d reasons: object and Go ABI disagree",
				mapReasons, reasons.MaxEntries(), abi.ReasonMax)
		}
		// The filter must cover every port.
		if pf, _ := m.GetMap(mapPortFilter); pf.MaxEntries() != abi.PortWords {
			return fmt.Errorf("map %s has %d entries but pkg/abi expects %d: object and Go ABI disagree",
				mapPortFilter, pf.MaxEntries(), abi.PortWords)
		}
		outer, _ := m.GetMap(mapMaglevOuter)
		info, err := outer.InnerMapInfo()
		if err != nil {
			return fmt.Errorf("map %s: reading its inner map template: %w", mapMaglevOuter, err)
		}
		if info.Type != bpf.MapTypeArray || info.KeySize != 4 || info.ValueSize != 4 {
			return fmt.Errorf("map %s: inner map template is %s key %d value %d, want an ARRAY of u32 -> u32",
				mapMaglevOuter, info.Type, info.KeySize, info.ValueSize)
		}
		if info.MapFlags&bpfFInnerMap == 0 {
			return fmt.Errorf("map %s: inner map template lacks BPF_F_INNER_MAP, so tables of different sizes could not be swapped in",
				mapMaglevOuter)
		}
		d.inner = *info
		if err := resize(m, opts.Sizes); err != nil {
			return err
		}
		if opts.PinDir == "" {
			return nil
		}
		d.pins, err = preparePins(m, specs, opts)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("loading xdplb: %w", err)
	}
	d.obj = obj
	// Map handles taken before load carry no fd for the low-level calls
	// (batch lookups), so take them again now.
	for _, s := range specs {
		bm, err := obj.mod.GetMap(s.name)
		if err != nil {
			obj.close()
			return nil, fmt.Errorf("loading xdplb: map %s after load: %w", s.name, err)
		}
		*s.dst = bm
	}
	if opts.PinDir != "" {
		if err := d.finishPins(opts); err != nil {
			obj.close()
			return nil, fmt.Errorf("loading xdplb: %w", err)
		}
	}
	return d, nil
}

// resize applies Sizes before load. Only map definitions use the compiled-in
// ceilings: the program bounds every id by a runtime lookup, never by a
// constant, so any size is safe.
func resize(m *bpf.Module, sz Sizes) error {
	set := func(n int, entries uint32, names ...string) error {
		if n == 0 {
			return nil
		}
		for _, name := range names {
			bm, err := m.GetMap(name)
			if err != nil {
				return fmt.Errorf("object has no map %q: %w", name, err)
			}
			if err := bm.SetMaxEntries(entries); err != nil {
				return fmt.Errorf("resizing map %s to %d entries: %w", name, entries, err)
			}
		}
		return nil
	}
	if err := set(sz.Flows, uint32(sz.Flows), mapCTFwd, mapCTRev); err != nil {
		return err
	}
	if err := set(sz.Services, uint32(sz.Services), mapMaglevOuter, mapSvcStats, mapSvcTags); err != nil {
		return err
	}
	if err := set(sz.Services, uint32(sz.Services*VIPsPerService), mapServices); err != nil {
		return err
	}
	// Slot 0 means "no backend", so ids run 1..Backends.
	return set(sz.Backends, uint32(sz.Backends+1), mapBackends, mapBackendStats, mapBackendTags)
}

func checkMap(m *bpf.BPFMap, s mapSpec) error {
	if m.Type() != s.typ {
		return fmt.Errorf("map %s is %s, want %s", s.name, m.Type(), s.typ)
	}
	if uintptr(m.KeySize()) != s.keySize || uintptr(m.ValueSize()) != s.valueSize {
		return fmt.Errorf("map %s has key/value size %d/%d but pkg/abi expects %d/%d: object and Go ABI disagree",
			s.name, m.KeySize(), m.ValueSize(), s.keySize, s.valueSize)
	}
	return nil
}

// FlowCapacity is the size each conntrack map was created with.
func (d *Dataplane) FlowCapacity() int { return int(d.ctFwd.MaxEntries()) }

// ProgramID is the kernel's id of the loaded XDP program (as bpftool shows).
func (d *Dataplane) ProgramID() uint32 { return d.obj.id }

// Close detaches the program from every interface this Dataplane attached it
// to, then releases program and maps. The maps, and with them conntrack,
// vanish once nothing else holds them. No other method may be called after
// (or during) Close.
func (d *Dataplane) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	ifs := make([]int, 0, len(d.attached))
	for ifindex := range d.attached {
		ifs = append(ifs, ifindex)
	}
	d.mu.Unlock()

	var errs []error
	for _, ifindex := range ifs {
		if err := d.Detach(ifindex); err != nil {
			errs = append(errs, err)
		}
	}
	d.obj.close()
	if len(errs) > 0 {
		return fmt.Errorf("closing xdplb: %w", errors.Join(errs...))
	}
	return nil
}

// object is one loaded BPF ELF object with the single program we run from it.
type object struct {
	mod  *bpf.Module
	prog *bpf.BPFProg
	fd   int
	id   uint32
}

// loadObject loads an ELF image and finds progName in it. configure runs
// between open and load, where maps can still be checked and resized.
//
// libbpfgo v0.8.0's NewModuleFromBuffer insists on raising RLIMIT_MEMLOCK,
// which fails without CAP_SYS_RESOURCE (and is useless since kernel 5.11
// charges BPF memory to the cgroup). Opening from a file skips that, so the
// image goes into a memfd and is opened through /proc/self/fd: no file is
// ever written to disk.
func loadObject(image []byte, progName string, configure func(*bpf.Module) error) (*object, error) {
	installLibbpfLogger()
	if len(image) == 0 {
		return nil, errors.New("empty BPF object: was `make bpf` run before the build?")
	}
	fd, err := unix.MemfdCreate(progName+".bpf.o", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating memfd for the BPF object: %w", err)
	}
	f := os.NewFile(uintptr(fd), progName+".bpf.o")
	defer f.Close() // libbpf has read the ELF by the time we return
	if _, err := f.Write(image); err != nil {
		return nil, fmt.Errorf("writing BPF object to memfd: %w", err)
	}

	var mod *bpf.Module
	logs, err := captureLibbpf(func() error {
		var err error
		mod, err = bpf.NewModuleFromFileArgs(bpf.NewModuleArgs{
			BPFObjPath:      fmt.Sprintf("/proc/self/fd/%d", fd),
			SkipMemlockBump: true,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("opening BPF object: %w%s", err, warnTail(logs, 5))
	}
	ok := false
	defer func() {
		if !ok {
			mod.Close()
		}
	}()
	prog, err := mod.GetProgram(progName)
	if err != nil {
		return nil, fmt.Errorf("object has no program %q: %w", progName, err)
	}
	if prog.GetType() != bpf.BPFProgTypeXdp {
		return nil, fmt.Errorf("program %s is of type %s, want XDP", progName, prog.GetType())
	}
	if configure != nil {
		if err := configure(mod); err != nil {
			return nil, err
		}
	}
	logs, err = captureLibbpf(mod.BPFLoadObject)
	if err != nil {
		return nil, explainLoadError(err, progName, logs)
	}
	o := &object{mod: mod, prog: prog, fd: prog.FileDescriptor()}
	if o.id, _, err = progInfo(o.fd); err != nil {
		return nil, fmt.Errorf("reading info of loaded program %s: %w", progName, err)
	}
	ok = true
	return o, nil
}

func (o *object) close() {
	if o != nil && o.mod != nil {
		o.mod.Close()
		o.mod = nil
	}
}

// explainLoadError names what the kernel refused: the program (with the end
// of the verifier's log, where the reason is) or a map.
func explainLoadError(err error, progName string, logs string) error {
	const begin, end = "-- BEGIN PROG LOAD LOG --", "-- END PROG LOAD LOG --"
	if i := strings.Index(logs, begin); i >= 0 {
		vlog := logs[i+len(begin):]
		if j := strings.Index(vlog, end); j >= 0 {
			vlog = vlog[:j]
		}
		return fmt.Errorf("kernel refused the XDP program %s: %w\nverifier log (last lines):\n%s",
			progName, err, lastLines(vlog, 25))
	}
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "failed to create") && strings.Contains(line, "map '") {
			return fmt.Errorf("kernel refused to create a map: %w: %s", err, strings.TrimSpace(line))
		}
	}
	return fmt.Errorf("loading BPF object into the kernel: %w%s", err, warnTail(logs, 8))
}

func lastLines(s string, n int) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// warnTail formats the last libbpf lines for an error message.
func warnTail(logs string, n int) string {
	t := lastLines(logs, n)
	if t == "" {
		return ""
	}
	return "\nlibbpf said:\n" + t
}

// libbpfLogger carries libbpf's own output.
var libbpfLogger = logrus.WithField("subsystem", "libbpf")

var (
	loggerOnce sync.Once
	// captureMu serializes operations whose libbpf output is captured, so
	// one Load's log cannot end up in another's error.
	captureMu sync.Mutex
	bufMu     sync.Mutex
	captured  *libbpfOutput
)

// libbpfOutput is what libbpf printed during one operation.
type libbpfOutput struct {
	text     strings.Builder
	warnings []string
}

// installLibbpfLogger routes libbpf's output through logrus. libbpfgo's
// default prints every level, debug included, to stderr.
func installLibbpfLogger() {
	loggerOnce.Do(func() {
		bpf.SetLoggerCbs(bpf.Callbacks{Log: libbpfLog})
	})
}

func libbpfLog(level int, msg string) {
	line := strings.TrimRight(msg, "\n")
	bufMu.Lock()
	c := captured
	if c != nil {
		c.text.WriteString(msg)
		if level == bpf.LibbpfWarnLevel {
			c.warnings = append(c.warnings, line)
		}
	}
	bufMu.Unlock()
	if level == bpf.LibbpfWarnLevel && c == nil {
		libbpfLogger.Warn(line)
	} else {
		libbpfLogger.Debug(line)
	}
}

// captureLibbpf runs fn and returns what libbpf printed meanwhile. If fn
// succeeds, libbpf's warnings are logged: they did not become an error.
func captureLibbpf(fn func() error) (string, error) {
	installLibbpfLogger()
	captureMu.Lock()
	defer captureMu.Unlock()
	out := &libbpfOutput{}
	bufMu.Lock()
	captured = out
	bufMu.Unlock()
	err := fn()
	bufMu.Lock()
	captured = nil
	bufMu.Unlock()
	if err == nil {
		for _, w := range out.warnings {
			libbpfLogger.Warn(w)
		}
	}
	return out.text.String(), err
}
