package status

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Width is the terminal width Render fits: every line is at most this long.
const Width = 80

// backendRow is the table's format: 80 columns exactly, without indentation,
// so that a service's backends line up under one header on any terminal.
// The two pairs of packet and byte rates, to the backend and from it, are
// set apart by two spaces each and named by directionHead above them.
// The backend's address is on the line below, with its ID and MAC: in
// static mode it is the name already, and a column for it would leave no
// room for both directions.
const backendRow = "%-15s %3s %-9s %5s %6s %5s  %5s %5s  %5s %5s %4s\n"

// directionHead puts each direction's name over its pair of columns.
var directionHead = fmt.Sprintf("%50s%-13s%s\n", "", "TO BACKEND", "FROM BACKEND")

// Render writes the document as text for an 80-column terminal. Rates
// appear only when the document has them (IntervalSeconds > 0).
func Render(w io.Writer, s Status) error {
	var b strings.Builder
	rated := s.IntervalSeconds > 0
	head := []string{"xdplb " + s.Version, s.Discovery}
	if s.Ready {
		head = append(head, "ready")
	} else {
		head = append(head, "NOT READY")
	}
	head = append(head, s.Time.UTC().Format("2006-01-02 15:04:05 UTC"))
	if rated {
		head = append(head, fmt.Sprintf("rates over %.1fs", s.IntervalSeconds))
	} else {
		head = append(head, "no rates (one sample)")
	}
	wrap(&b, "", strings.Join(head, "  "))
	var ifs []string
	for _, it := range s.Interfaces {
		ifs = append(ifs, fmt.Sprintf("%s %s %s", it.Name, it.IP, it.Mode))
	}
	wrap(&b, "  ", fmt.Sprintf("on %s; SNAT ports %d-%d (%d per backend)",
		orNone(strings.Join(ifs, ", ")), s.SNATPorts.Min, s.SNATPorts.Max, s.SNATPorts.Size))

	if len(s.Services) == 0 {
		b.WriteString("\nno services\n")
	}
	for _, svc := range s.Services {
		b.WriteString("\n")
		wrap(&b, "", fmt.Sprintf("%s %s on %s", svc.Name, svc.Port(), orNone(strings.Join(svc.VIPs, ","))))
		b.WriteString(directionHead)
		fmt.Fprintf(&b, backendRow, "BACKEND", "W", "STATE", "FLOWS", "ACTIVE", "NEW/S", "PKT/S", "B/S", "PKT/S", "B/S", "SNAT")
		if len(svc.Backends) == 0 {
			b.WriteString("  (no backends: new flows are refused)\n")
		}
		var flows, active, snat int
		for _, be := range svc.Backends {
			rs := rateCells(rated, be.Rates)
			fmt.Fprintf(&b, backendRow, clip(be.Name, 15), num(float64(be.Weight)), be.State,
				num(float64(be.Flows)), num(float64(be.ActiveFlows)), rs[0], rs[1], rs[2], rs[3], rs[4],
				num(float64(be.SNATPortsInUse)))
			flows, active, snat = flows+be.Flows, active+be.ActiveFlows, snat+be.SNATPortsInUse
			var detail []string
			if be.IP != be.Name {
				detail = append(detail, "ip "+orNone(be.IP))
			}
			if be.ID != "" {
				detail = append(detail, "id "+be.ID)
			}
			detail = append(detail, "mac "+orNone(be.MAC))
			if be.Reason != "" {
				detail = append(detail, "reason "+be.Reason)
			}
			wrapFrom(&b, "  ", "    ", strings.Join(detail, "  "))
		}
		// The service's own counters, which also hold the traffic of
		// backends it has since lost, under the same columns; flows and
		// ports are the backends' sums.
		rs := rateCells(rated, svc.Rates)
		fmt.Fprintf(&b, backendRow, "service total", "", "", num(float64(flows)), num(float64(active)),
			rs[0], rs[1], rs[2], rs[3], rs[4], num(float64(snat)))
	}

	b.WriteString("\n")
	var flows []string
	for _, f := range s.Flows {
		if f.Flows > 0 {
			flows = append(flows, fmt.Sprintf("%s %d", f.State, f.Flows))
		}
	}
	at := ""
	if !s.FlowsAt.IsZero() {
		at = " at " + s.FlowsAt.UTC().Format("15:04:05")
	}
	wrap(&b, "  ", fmt.Sprintf("FLOWS %d%s: %s", s.TrackedFlows, at, orNone(strings.Join(flows, ", "))))

	b.WriteString("\n")
	if rated {
		b.WriteString("REASONS (packets, per second; drops first)\n")
	} else {
		b.WriteString("REASONS (packets; drops first)\n")
	}
	for i, r := range s.Reasons {
		rate := ""
		if r.PerSec != nil {
			rate = num(*r.PerSec)
		}
		total := strconv.FormatUint(r.Packets, 10)
		if len(total) > 9 {
			total = num(float64(r.Packets))
		}
		fmt.Fprintf(&b, "%-21s %9s %6s", r.Reason, total, rate)
		if i%2 == 0 && i+1 < len(s.Reasons) {
			b.WriteString("    ")
		} else {
			b.WriteString("\n")
		}
	}

	b.WriteString("\n")
	sync := "SYNC none yet"
	if !s.Sync.At.IsZero() {
		result := "ok"
		if !s.Sync.OK {
			result = "FAILED: " + s.Sync.Error
		}
		sync = fmt.Sprintf("SYNC %s (%s ago, #%d) %s, cause %s, took %.1fms: %s",
			s.Sync.At.UTC().Format("15:04:05"), s.Time.Sub(s.Sync.At).Round(time.Second), s.Sync.Count,
			result, s.Sync.Cause, s.Sync.TookMs, s.Sync.Why)
		if !s.Sync.OK && !s.Sync.LastOK.IsZero() {
			sync += "; last ok " + s.Sync.LastOK.UTC().Format("15:04:05")
		}
	}
	wrap(&b, "  ", sync)

	if len(s.Problems) == 0 {
		b.WriteString("PROBLEMS none\n")
	} else {
		fmt.Fprintf(&b, "PROBLEMS %d\n", len(s.Problems))
		for _, p := range s.Problems {
			level := "error"
			if p.Warning {
				level = "warn"
			}
			wrapFrom(&b, "  ", "    ", fmt.Sprintf("%s %s: %s", level, p.Kind, p.Message))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// rateCells are the NEW/S and the two directions' PKT/S and B/S cells of
// a row: dashes without rates.
func rateCells(rated bool, r *Rates) [5]string {
	if !rated || r == nil {
		return [5]string{"-", "-", "-", "-", "-"}
	}
	return [5]string{num(r.NewFlows), num(r.ToBackend.Packets), num(r.ToBackend.Bytes),
		num(r.FromBackend.Packets), num(r.FromBackend.Bytes)}
}

// wrap writes text in lines of at most Width columns, breaking at spaces;
// continuation lines start with indent. A word longer than a line is cut.
func wrap(b *strings.Builder, indent, text string) { wrapFrom(b, "", indent, text) }

// wrapFrom is wrap with the first line starting with first.
func wrapFrom(b *strings.Builder, first, indent, text string) {
	line, empty := first, true
	for _, word := range strings.Fields(text) {
		switch {
		case empty:
			line += word
		case len(line)+1+len(word) <= Width:
			line += " " + word
		default:
			b.WriteString(line + "\n")
			line = indent + word
		}
		empty = false
		for len(line) > Width {
			b.WriteString(line[:Width] + "\n")
			line = indent + line[Width:]
		}
	}
	if !empty {
		b.WriteString(line + "\n")
	}
}

// num fits a count or a rate in 5 columns: 0, 7, 3.5, 120, 9.1k, 12M.
func num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v < 10 && v != float64(int64(v)):
		return strconv.FormatFloat(v, 'f', 1, 64)
	case v < 10000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	for _, u := range []string{"k", "M", "G", "T"} {
		v /= 1000
		if v < 10 {
			return strconv.FormatFloat(v, 'f', 1, 64) + u
		}
		if v < 1000 {
			return strconv.FormatFloat(v, 'f', 0, 64) + u
		}
	}
	return strconv.FormatFloat(v, 'e', 0, 64)
}

// clip shortens s to n columns, keeping both ends: replicas differ at the
// end of their names (project-web-1, project-web-2).
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	head := (n - 1) / 2
	return s[:head] + "~" + s[len(s)-(n-1-head):]
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
