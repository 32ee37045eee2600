package docker

import (
	"fmt"
	"slices"
	"strings"

	"github.com/xdplb/xdplb/pkg/lbmodel"
	"github.com/xdplb/xdplb/pkg/spec"
)

// Label names under the prefix: <prefix>.enable and so on.
const (
	LabelEnable  = "enable"
	LabelService = "service"
	LabelListen  = "listen"
	LabelWeight  = "weight"
	LabelNetwork = "network"
	LabelExpose  = "expose"
)

// Limits on what one container's labels may ask for. A weight is relative,
// so 256 levels (HAProxy's range) are plenty, and the cost of building a
// Maglev table grows with the ratio of the largest weight to the others.
// A container listening on more ports than MaxListenPorts is far more likely
// a mistake (a range pasted in) than a design, and each port costs a
// service slot.
const (
	MaxWeight      = 256
	MaxListenPorts = 16
)

// ComposeServiceLabel is where Docker Compose records a container's service;
// replicas of one Compose service share it, so it is the natural default
// service name.
const ComposeServiceLabel = "com.docker.compose.service"

// ComposeProjectLabel is where Docker Compose records a container's project:
// the unit a balancer serves by default.
const ComposeProjectLabel = "com.docker.compose.project"

var knownLabels = append([]string{LabelEnable, LabelService, LabelListen, LabelWeight, LabelNetwork, LabelExpose}, checkLabels...)

// LabelKey returns the full label key of one of our labels: LabelKey("xdplb",
// LabelListen) is "xdplb.listen".
func LabelKey(prefix, name string) string { return prefix + "." + name }

// Settings is what a container's labels ask for.
type Settings struct {
	// Enabled is true when <prefix>.enable opts the container in.
	Enabled bool
	// Service is the service name: <prefix>.service, else the Compose
	// service, else the container name.
	Service string
	// Listen is the raw <prefix>.listen value, for messages; Ports is it parsed.
	Listen string
	Ports  []lbmodel.Port
	// Weight is <prefix>.weight, 1 by default.
	Weight uint32
	// Network is <prefix>.network, "" to let the builder choose.
	Network string
	// Expose is <prefix>.expose split at commas: the balancer's networks the
	// service answers on; nil for the default (see Build).
	Expose []string
	// Check is the active health check (check.go); nil: none asked.
	Check *lbmodel.Check
}

// ParseEnable reads an <prefix>.enable value: true, 1 and yes opt in;
// false, 0 and no opt out (case-insensitively). Anything else is an error
// rather than a silent "no", because a typo would otherwise hide a backend.
func ParseEnable(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "1", "yes":
		return true, nil
	case "false", "0", "no":
		return false, nil
	}
	return false, fmt.Errorf("want true/false, 1/0 or yes/no")
}

// ParseLabels reads a container's labels under prefix.
//
// A container that did not opt in comes back with Enabled false and its
// other labels unread. For one that did, errs lists every label that keeps
// it from being a backend (all of them, so one round of fixes is enough);
// warnings lists labels that were ignored without leaving the container out
// (unknown <prefix>.* keys, usually typos). A container that carries our
// labels but no <prefix>.enable at all gets a warning too: it is almost
// always a forgotten opt-in.
func ParseLabels(c Container, prefix string) (s Settings, errs, warnings []Problem) {
	problem := func(label, value, format string, args ...any) Problem {
		return Problem{ContainerID: c.ID, ContainerName: c.Name, Label: label, Value: value, Reason: fmt.Sprintf(format, args...)}
	}
	key := func(name string) string { return LabelKey(prefix, name) }

	enableValue, hasEnable := c.Labels[key(LabelEnable)]
	if !hasEnable {
		if ours := ourLabels(c.Labels, prefix); len(ours) > 0 {
			warnings = append(warnings, problem(key(LabelEnable), "",
				"container has %s but no %s=true; ignored", strings.Join(ours, ", "), key(LabelEnable)))
		}
		return Settings{}, nil, warnings
	}
	enabled, err := ParseEnable(enableValue)
	if err != nil {
		return Settings{}, []Problem{problem(key(LabelEnable), enableValue, "%v; container ignored", err)}, nil
	}
	if !enabled {
		return Settings{}, nil, nil
	}
	s = Settings{Enabled: true, Weight: 1}

	// Service name.
	switch v, ok := c.Labels[key(LabelService)]; {
	case ok:
		s.Service = strings.TrimSpace(v)
		if err := spec.ValidateName(s.Service); err != nil {
			errs = append(errs, problem(key(LabelService), v, "%v", err))
		}
	case c.Labels[ComposeServiceLabel] != "":
		v := c.Labels[ComposeServiceLabel]
		s.Service = v
		if err := spec.ValidateName(v); err != nil {
			errs = append(errs, problem(ComposeServiceLabel, v, "%v; set %s", err, key(LabelService)))
		}
	default:
		s.Service = c.Name
		if err := spec.ValidateName(c.Name); err != nil {
			errs = append(errs, problem("", "", "container name is not a usable service name (%v); set %s", err, key(LabelService)))
		}
	}

	// Listen ports: required, there is no sensible default.
	if v, ok := c.Labels[key(LabelListen)]; !ok {
		errs = append(errs, problem(key(LabelListen), "", "required label is missing (want LISTEN[:TARGET][/PROTO][,...], e.g. 80:8080/tcp)"))
	} else {
		s.Listen = v
		if s.Ports, err = spec.ParsePorts(v); err != nil {
			errs = append(errs, problem(key(LabelListen), v, "%v", err))
		} else if len(s.Ports) > MaxListenPorts {
			errs = append(errs, problem(key(LabelListen), v, "%d listen ports; at most %d per container", len(s.Ports), MaxListenPorts))
		}
	}

	if v, ok := c.Labels[key(LabelWeight)]; ok {
		if s.Weight, err = spec.ParseWeight(strings.TrimSpace(v)); err != nil {
			errs = append(errs, problem(key(LabelWeight), v, "%v", err))
		} else if s.Weight > MaxWeight {
			errs = append(errs, problem(key(LabelWeight), v, "weight %d is above the maximum of %d", s.Weight, MaxWeight))
		}
	}

	if v, ok := c.Labels[key(LabelExpose)]; ok {
		for _, n := range strings.Split(v, ",") {
			if n = strings.TrimSpace(n); n != "" {
				s.Expose = append(s.Expose, n)
			}
		}
		if len(s.Expose) == 0 {
			errs = append(errs, problem(key(LabelExpose), v, "want a comma-separated list of the balancer's networks"))
		}
	}

	if v, ok := c.Labels[key(LabelNetwork)]; ok {
		s.Network = strings.TrimSpace(v)
		if !slices.ContainsFunc(c.Networks, func(e Endpoint) bool { return e.Network == s.Network }) {
			errs = append(errs, problem(key(LabelNetwork), v,
				"container is not attached to network %q (it is on %s)", s.Network, networkList(endpointNames(c.Networks))))
		}
	}

	chk, checkErrs := parseCheck(c, prefix, problem)
	s.Check = chk
	errs = append(errs, checkErrs...)

	for _, k := range ourLabels(c.Labels, prefix) {
		if name, _ := strings.CutPrefix(k, prefix+"."); !slices.Contains(knownLabels, name) || k == prefix {
			warnings = append(warnings, problem(k, c.Labels[k], "unknown label, ignored (known: %s)", knownList(prefix)))
		}
	}

	if len(errs) > 0 {
		return Settings{}, errs, warnings
	}
	return s, nil, warnings
}

// ourLabels returns the keys under prefix (and prefix itself), sorted.
func ourLabels(labels map[string]string, prefix string) []string {
	var out []string
	for k := range labels {
		if k == prefix || strings.HasPrefix(k, prefix+".") {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func knownList(prefix string) string {
	keys := make([]string, len(knownLabels))
	for i, n := range knownLabels {
		keys[i] = LabelKey(prefix, n)
	}
	return strings.Join(keys, ", ")
}

func endpointNames(eps []Endpoint) []string {
	out := make([]string, len(eps))
	for i, e := range eps {
		out[i] = e.Network
	}
	return out
}

// networkList formats network names for messages, sorted.
func networkList(names []string) string {
	if len(names) == 0 {
		return "no network"
	}
	names = slices.Clone(names)
	slices.Sort(names)
	return strings.Join(names, ", ")
}
