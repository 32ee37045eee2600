package docker

import "strings"

// Problem kinds, for metrics and `xdplb status`: a small fixed set, so that
// a label value or a container name never becomes a metric label.
const (
	KindBadLabel           = "bad_label"           // a label the balancer cannot use
	KindUnknownLabel       = "unknown_label"       // an unknown <prefix>.* key, ignored
	KindNotEnabled         = "not_enabled"         // <prefix>.* labels without <prefix>.enable
	KindNoSharedNetwork    = "no_shared_network"   // no network to reach the container on
	KindListenDisagreement = "listen_disagreement" // a replica's listen spec lost the vote
	KindListenConflict     = "listen_conflict"     // two services claim one port
)

// Kind classifies the problem into one of the Kind* constants.
func (p Problem) Kind() string {
	name := p.Label[strings.LastIndexByte(p.Label, '.')+1:]
	switch {
	case p.Label == "" && p.Warning:
		return KindNoSharedNetwork
	case p.Warning && name == LabelEnable:
		return KindNotEnabled
	case p.Warning:
		return KindUnknownLabel
	case name == LabelListen && strings.Contains(p.Reason, " cannot listen on "):
		return KindListenConflict
	case name == LabelListen && strings.Contains(p.Reason, "disagrees"):
		return KindListenDisagreement
	case name == LabelNetwork && strings.Contains(p.Reason, "load balancer"):
		return KindNoSharedNetwork
	}
	return KindBadLabel
}
