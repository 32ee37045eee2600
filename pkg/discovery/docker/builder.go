// Package docker discovers backends from Docker containers: which containers
// opted in through labels, which services they form, and how the load
// balancer reaches them. Build is the pure part: containers in, desired
// state out, so every rule is testable without an engine.
package docker

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/xdplb/xdplb/pkg/lbmodel"
)

// Endpoint is a container's attachment to one Docker network.
type Endpoint struct {
	Network string
	IP      netip.Addr
	MAC     net.HardwareAddr
}

// Container is what Build needs to know about one container.
type Container struct {
	ID, Name string // Name without the leading "/"
	Labels   map[string]string
	Running  bool
	Paused   bool
	Health   string // "" (no HEALTHCHECK), "starting", "healthy", "unhealthy"
	Stopping bool   // a kill/stop event was seen and no die yet: drain
	Networks []Endpoint
	// Created orders claimants: the older container keeps a contested
	// listen port and breaks ties in its service's vote.
	Created time.Time
}

// project is the container's Compose project, "" outside Compose.
func (c Container) project() string { return c.Labels[ComposeProjectLabel] }

// SelfEndpoint is the load balancer's own attachment to one network: its
// address there is the VIP for services reached through it.
type SelfEndpoint struct {
	Network string
	IP      netip.Addr
	MAC     net.HardwareAddr
	IfIndex int
}

// Self is the load balancer's own container.
type Self struct {
	ContainerID string
	Name        string // without Docker's leading slash
	// Project is our own Compose project, "" when not started by Compose;
	// <prefix>.expose may name networks without its "PROJECT_" prefix.
	Project  string
	Networks []SelfEndpoint
}

// Problem is a container left out, or a label ignored, and why.
type Problem struct {
	ContainerID, ContainerName, Label, Value, Reason string
	// Warning marks what leaves the container working or is not its fault
	// alone: an ignored unknown label, or no network shared with the load
	// balancer (common on an engine shared by several Compose projects).
	// Everything else is an error in the container's labels.
	Warning bool
}

// String is a one-line message naming the container, the label and its
// value (when a label is at fault), and the reason.
func (p Problem) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "container %q (%s)", p.ContainerName, abbrevID(p.ContainerID))
	if p.Label != "" {
		fmt.Fprintf(&b, ": label %s=%q", p.Label, p.Value)
	}
	b.WriteString(": ")
	b.WriteString(p.Reason)
	return b.String()
}

// abbrevID is Docker's 12-character short form.
func abbrevID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// Health values and weight reasons. "none" is what the engine reports for
// a container whose image defines no HEALTHCHECK in some versions; it means
// the same as "".
const (
	healthNone    = "none"
	healthHealthy = "healthy"

	ReasonRunning  = "running"  // no HEALTHCHECK: running is all we know
	ReasonHealthy  = "healthy"  // HEALTHCHECK passes
	ReasonStopping = "stopping" // stop/kill seen: drain, let flows finish
	ReasonPaused   = "paused"   // frozen: it would accept SYNs and never answer
	ReasonLabel    = "label"    // <prefix>.weight=0: drained by the operator
	// Any other health status ("starting", "unhealthy") is its own reason.
)

// BuildOptions are the balancer's own settings that labels must respect.
type BuildOptions struct {
	// Prefix is the label namespace; "" means DefaultLabelPrefix.
	Prefix string
	// MetricsPort is the balancer's own TCP port (/metrics, /healthz); 0
	// for none. A service listening there would hide it.
	MetricsPort uint16
	// QualifyByProject: when containers of several Compose projects name
	// the same service, each becomes PROJECT_SERVICE instead of merging
	// (a balancer serving the whole engine).
	QualifyByProject bool
}

// candidate is a container that passed its own checks and will be a
// backend of its service unless its service loses a conflict.
type candidate struct {
	c        Container
	s        Settings
	ep       Endpoint
	self     SelfEndpoint
	expose   []SelfEndpoint // resolved <prefix>.expose, nil for the default
	weight   uint32
	reason   string
	specKey  string // canonical form of s.Ports and s.Expose, to compare replicas
	listenOK bool   // agrees with its service's winning spec
}

// older orders candidates by container creation, then ID: the order that
// decides votes and conflicts, identical on every rebuild.
func older(a, b *candidate) int {
	return cmp.Or(a.c.Created.Compare(b.c.Created), cmp.Compare(a.c.ID, b.c.ID))
}

// Build computes the desired state from the containers, as seen by the load
// balancer self. The containers' order does not matter; the result is
// sorted (services by name then port, backends by ID, VIPs by address,
// problems by container then label).
//
// Rules, beyond what the labels say:
//   - self is never a backend. Containers neither running nor stopping are
//     silently left out (they are not backends, and not a mistake).
//   - A listen port that is the balancer's own (MetricsPort) is refused
//     with one error for the container.
//   - The network the LB reaches a container on is <prefix>.network, else
//     the first (by name) network both share with IPv4 addresses on both
//     sides. None: Problem naming both sides' networks.
//   - Weight is the label's, but 0 while stopping, paused, or with a health
//     status other than healthy; Backend.Reason says which.
//   - Replicas of one service that disagree on <prefix>.listen or
//     <prefix>.expose: the spec held by most replicas wins, a tie going to
//     the spec of the oldest replica (creation time, then ID); the others
//     are left out with a Problem. Voting keeps one misconfigured replica,
//     typically the newest, from taking the service down.
//   - Two services claiming the same listen port/proto: the service with
//     the oldest container keeps it, so a newcomer cannot take a serving
//     port down; the newcomer's port is refused with one Problem, and its
//     other ports keep working.
//   - A service answers on (its VIPs are the LB's addresses on) the
//     networks <prefix>.expose names. By default: the networks where it has
//     backends, plus every network of the LB on which no service has a
//     backend (a network the LB shares only with clients). So a service
//     never answers on another service's backend network unless asked to.
func Build(self Self, containers []Container, opts BuildOptions) (lbmodel.State, []Problem) {
	prefix := opts.Prefix
	if prefix == "" {
		prefix = DefaultLabelPrefix
	}
	listenKey := LabelKey(prefix, LabelListen)
	var problems []Problem
	problem := func(c Container, label, value, format string, args ...any) {
		problems = append(problems, Problem{ContainerID: c.ID, ContainerName: c.Name, Label: label, Value: value, Reason: fmt.Sprintf(format, args...)})
	}

	selfNets := map[string]SelfEndpoint{}
	var selfNames []string
	for _, se := range self.Networks {
		selfNets[se.Network] = se
		selfNames = append(selfNames, se.Network)
	}

	sorted := slices.Clone(containers)
	slices.SortStableFunc(sorted, func(a, b Container) int { return cmp.Compare(a.ID, b.ID) })
	sorted = slices.CompactFunc(sorted, func(a, b Container) bool { return a.ID == b.ID })

	// Per-container checks.
	var cands []*candidate
	for _, c := range sorted {
		if isSelf(self.ContainerID, c.ID) || (!c.Running && !c.Stopping) {
			continue
		}
		s, errs, warnings := ParseLabels(c, prefix)
		for i := range warnings {
			warnings[i].Warning = true
		}
		problems = append(problems, warnings...)
		problems = append(problems, errs...)
		if !s.Enabled || len(errs) > 0 {
			continue
		}
		if p, ok := reservedPort(s.Ports, opts); ok {
			problem(c, listenKey, s.Listen, "%s", p)
			continue
		}
		expose, missing := resolveExpose(s.Expose, self)
		if len(missing) > 0 {
			problem(c, LabelKey(prefix, LabelExpose), strings.Join(s.Expose, ","),
				"the load balancer has no IPv4 address on network %s (it is on %s)", quoteJoin(missing), networkList(selfNames))
			continue
		}
		ep, se, ok := chooseNetwork(c, s.Network, selfNets)
		if !ok {
			_, attached := selfNets[s.Network]
			switch {
			case s.Network != "" && !attached:
				problem(c, LabelKey(prefix, LabelNetwork), s.Network,
					"the load balancer is not attached to network %q (it is on %s)", s.Network, networkList(selfNames))
			case s.Network != "":
				problem(c, LabelKey(prefix, LabelNetwork), s.Network,
					"no IPv4 address on network %q (container %s, load balancer %s)",
					s.Network, addrOrNone(ep.IP), addrOrNone(se.IP))
			default:
				problem(c, "", "",
					"no network shared with the load balancer with IPv4 on both sides: container is on %s, load balancer on %s; attach both to one network or set %s",
					describeNetworks(c.Networks), describeSelfNetworks(self.Networks), LabelKey(prefix, LabelNetwork))
				problems[len(problems)-1].Warning = true
			}
			continue
		}
		weight, reason := effectiveWeight(c, s.Weight)
		key := portsKey(s.Ports)
		if expose != nil {
			key += " exposed on " + exposeKey(expose)
		}
		cands = append(cands, &candidate{
			c: c, s: s, ep: ep, self: se, expose: expose, weight: weight, reason: reason, specKey: key,
		})
	}
	byService := groupServices(cands, opts.QualifyByProject)

	// Each service's spec, by majority of its replicas.
	type portKey struct {
		listen uint16
		proto  lbmodel.Proto
	}
	winners := map[string]*candidate{}
	oldest := map[string]*candidate{} // the service's oldest agreeing replica
	claims := map[portKey][]string{}  // listen port -> services claiming it
	for name, cs := range byService {
		winner := majoritySpec(cs)
		winners[name] = winner
		votes := 0
		for _, cd := range cs {
			if cd.specKey == winner.specKey {
				cd.listenOK = true
				votes++
				if oldest[name] == nil || older(cd, oldest[name]) < 0 {
					oldest[name] = cd
				}
			}
		}
		for _, cd := range cs {
			if !cd.listenOK {
				problem(cd.c, listenKey, cd.s.Listen,
					"service %q listens on %s (the spec of %d of its %d containers); this container disagrees and is left out",
					name, winner.specKey, votes, len(cs))
			}
		}
		for _, p := range winner.s.Ports {
			k := portKey{p.Listen, p.Proto}
			claims[k] = append(claims[k], name)
		}
	}

	// Listen conflicts between services: the oldest claimant keeps the port.
	// Each newcomer gets one line for all the ports it was refused.
	lost := map[string]map[portKey]bool{}
	refusals := map[string][]string{}
	for k, names := range claims {
		if len(names) < 2 {
			continue
		}
		slices.SortFunc(names, func(a, b string) int { return cmp.Or(older(oldest[a], oldest[b]), cmp.Compare(a, b)) })
		for _, name := range names[1:] {
			if lost[name] == nil {
				lost[name] = map[portKey]bool{}
			}
			lost[name][k] = true
			refusals[name] = append(refusals[name], fmt.Sprintf("%d/%s (held by service %q, container %q, older)",
				k.listen, k.proto, names[0], oldest[names[0]].c.Name))
		}
	}
	for name, rs := range refusals {
		slices.Sort(rs)
		cd := oldest[name]
		problem(cd.c, listenKey, cd.s.Listen, "service %q cannot listen on %s; those ports of %q are refused, its others serve",
			name, strings.Join(rs, ", "), name)
	}

	// Networks carrying any backend: another service's backend network is
	// not a place to answer by default.
	backendNets := map[string]bool{}
	for _, cs := range byService {
		for _, cd := range cs {
			if cd.listenOK {
				backendNets[cd.self.Network] = true
			}
		}
	}

	var st lbmodel.State
	for name, cs := range byService {
		var backends []lbmodel.Backend
		var vips []netip.Addr
		for _, cd := range cs {
			if !cd.listenOK {
				continue
			}
			backends = append(backends, lbmodel.Backend{
				ID: cd.c.ID, Name: cd.c.Name, IP: cd.ep.IP, MAC: cd.ep.MAC,
				IfIndex: cd.self.IfIndex, Weight: cd.weight, Reason: cd.reason, Check: cd.s.Check,
			})
			vips = append(vips, cd.self.IP)
		}
		if w := winners[name]; w.expose != nil {
			vips = vips[:0]
			for _, se := range w.expose {
				vips = append(vips, se.IP)
			}
		} else {
			for _, se := range self.Networks {
				if !backendNets[se.Network] && se.IP.Is4() {
					vips = append(vips, se.IP)
				}
			}
		}
		slices.SortFunc(backends, func(a, b lbmodel.Backend) int { return cmp.Compare(a.ID, b.ID) })
		slices.SortFunc(vips, netip.Addr.Compare)
		vips = slices.Compact(vips)
		for _, p := range winners[name].s.Ports {
			if lost[name][portKey{p.Listen, p.Proto}] {
				continue
			}
			// Each Service gets its own slices: consumers may keep or
			// modify one without touching its siblings.
			st.Services = append(st.Services, lbmodel.Service{
				Name: name, Port: p, VIPs: slices.Clone(vips), Backends: slices.Clone(backends),
			})
		}
	}
	slices.SortFunc(st.Services, func(a, b lbmodel.Service) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), comparePorts(a.Port, b.Port))
	})
	slices.SortStableFunc(problems, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.ContainerName, b.ContainerName), cmp.Compare(a.ContainerID, b.ContainerID),
			cmp.Compare(a.Label, b.Label), cmp.Compare(a.Value, b.Value), cmp.Compare(a.Reason, b.Reason))
	})
	return st, problems
}

// groupServices groups candidates by service name. With qualify, a name
// used in several Compose projects becomes PROJECT_NAME for the containers
// of a project, so two projects' "web" stay two services.
func groupServices(cands []*candidate, qualify bool) map[string][]*candidate {
	by := map[string][]*candidate{}
	projects := map[string]map[string]bool{}
	for _, cd := range cands {
		if projects[cd.s.Service] == nil {
			projects[cd.s.Service] = map[string]bool{}
		}
		projects[cd.s.Service][cd.c.project()] = true
	}
	for _, cd := range cands {
		name := cd.s.Service
		if p := cd.c.project(); qualify && p != "" && len(projects[name]) > 1 {
			name = p + "_" + name
		}
		by[name] = append(by[name], cd)
	}
	return by
}

// reservedPort says why a listen spec claims one of the balancer's own
// ports, if it does.
func reservedPort(ports []lbmodel.Port, opts BuildOptions) (string, bool) {
	for _, p := range ports {
		if opts.MetricsPort != 0 && p.Listen == opts.MetricsPort && p.Proto == lbmodel.TCP {
			return fmt.Sprintf("listen port %d/tcp is the load balancer's own (--http-addr)", p.Listen), true
		}
	}
	return "", false
}

// resolveExpose maps <prefix>.expose names to the LB's IPv4 endpoints. A
// name matches a network exactly or, in a Compose project, without the
// project's "PROJECT_" prefix (Compose's name for the network in the
// file). missing lists names that match none.
func resolveExpose(names []string, self Self) (eps []SelfEndpoint, missing []string) {
	for _, n := range names {
		i := slices.IndexFunc(self.Networks, func(se SelfEndpoint) bool {
			return se.IP.Is4() && (se.Network == n || self.Project != "" && se.Network == self.Project+"_"+n)
		})
		if i < 0 {
			missing = append(missing, n)
			continue
		}
		eps = append(eps, self.Networks[i])
	}
	return eps, missing
}

func exposeKey(eps []SelfEndpoint) string {
	names := make([]string, len(eps))
	for i, se := range eps {
		names[i] = se.Network
	}
	slices.Sort(names)
	return strings.Join(slices.Compact(names), ",")
}

// isSelf matches the LB's own ID, full or abbreviated (a container's
// hostname is its 12-character short ID, which is one way self is found).
func isSelf(selfID, id string) bool {
	if selfID == "" {
		return false
	}
	if selfID == id {
		return true
	}
	return len(selfID) >= 12 && len(id) >= 12 && (strings.HasPrefix(id, selfID) || strings.HasPrefix(selfID, id))
}

// chooseNetwork picks the container endpoint the LB will reach it on, and
// the LB's own endpoint on that network. want is the <prefix>.network label,
// "" to choose: the first shared network by name with IPv4 on both sides.
// When want is given and unusable, the endpoints found are returned for the
// message.
func chooseNetwork(c Container, want string, selfNets map[string]SelfEndpoint) (Endpoint, SelfEndpoint, bool) {
	eps := slices.Clone(c.Networks)
	slices.SortStableFunc(eps, func(a, b Endpoint) int { return cmp.Compare(a.Network, b.Network) })
	for _, ep := range eps {
		if want != "" && ep.Network != want {
			continue
		}
		se, shared := selfNets[ep.Network]
		if want != "" {
			return ep, se, shared && ep.IP.Is4() && se.IP.Is4()
		}
		if shared && ep.IP.Is4() && se.IP.Is4() {
			return ep, se, true
		}
	}
	return Endpoint{}, SelfEndpoint{}, false
}

// effectiveWeight is the weight a backend gets now, and why. Draining states
// win over the label: a stopping container must drain even at weight 5.
func effectiveWeight(c Container, labelWeight uint32) (uint32, string) {
	switch {
	case c.Stopping:
		return 0, ReasonStopping
	case c.Paused:
		return 0, ReasonPaused
	case c.Health != "" && c.Health != healthNone && c.Health != healthHealthy:
		return 0, c.Health
	case labelWeight == 0:
		return 0, ReasonLabel
	case c.Health == healthHealthy:
		return labelWeight, ReasonHealthy
	}
	return labelWeight, ReasonRunning
}

// majoritySpec returns a candidate holding the spec most candidates hold;
// on a tie, the spec of the oldest candidate (creation time, then ID), so
// the result does not depend on the order containers were listed in.
func majoritySpec(cands []*candidate) *candidate {
	count := map[string]int{}
	for _, cd := range cands {
		count[cd.specKey]++
	}
	var best *candidate
	for _, cd := range cands {
		if best == nil || count[cd.specKey] > count[best.specKey] ||
			count[cd.specKey] == count[best.specKey] && older(cd, best) < 0 {
			best = cd
		}
	}
	return best
}

// portsKey is a canonical form of a port list: replicas writing the same
// ports in a different order agree.
func portsKey(ports []lbmodel.Port) string {
	ps := slices.Clone(ports)
	slices.SortFunc(ps, comparePorts)
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.String()
	}
	return strings.Join(parts, ",")
}

func comparePorts(a, b lbmodel.Port) int {
	return cmp.Or(cmp.Compare(a.Listen, b.Listen), cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Target, b.Target))
}

func quoteJoin(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}

func addrOrNone(a netip.Addr) string {
	if !a.IsValid() {
		return "has none"
	}
	return "has " + a.String()
}

func describeNetworks(eps []Endpoint) string {
	if len(eps) == 0 {
		return "no network"
	}
	parts := make([]string, len(eps))
	for i, e := range eps {
		parts[i] = e.Network + " (" + addrString(e.IP) + ")"
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

func describeSelfNetworks(eps []SelfEndpoint) string {
	as := make([]Endpoint, len(eps))
	for i, e := range eps {
		as[i] = Endpoint{Network: e.Network, IP: e.IP}
	}
	return describeNetworks(as)
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return "no address"
	}
	return a.String()
}
