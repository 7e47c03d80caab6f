package replay

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// WriteText writes the summary for a person: what was read, what was
// decided, and every reason to doubt a line.
func (s *Summary) WriteText(w io.Writer) {
	var b strings.Builder
	from := fmt.Sprintf("%d packets", s.Packets)
	if s.Format == FormatLog {
		from = fmt.Sprintf("%d log lines", s.LogLines)
	}
	from = fmt.Sprintf("%s (%s, %s)", from, s.Format, sizeString(s.Bytes))
	if ch := s.Changes; ch != nil {
		fmt.Fprintf(&b, "replay: %d flows compared from %s: %d newly denied, %d newly allowed, %d unchanged",
			ch.Compared, from, ch.NewlyDenied, ch.NewlyAllowed, ch.Unchanged)
		if ch.NotCompared > 0 {
			fmt.Fprintf(&b, "; %d not compared (midstream or capture ended: undecided under a policy)", ch.NotCompared)
		}
		b.WriteString("\n")
		writeCounts(&b, "newly denied, by the new policy's deciding rule", ch.DeniedBy)
		writeCounts(&b, "newly allowed, by the baseline's rule that denied them", ch.AllowedBy)
		fmt.Fprintf(&b, "  under the new policy: %d allowed, %d denied%s\n", s.Allowed, s.Denied, reasons(s.DeniedBy))
	} else {
		fmt.Fprintf(&b, "replay: %d flows from %s: %d allowed, %d denied", s.Flows, from, s.Allowed, s.Denied)
		if n := s.Midstream + s.CaptureEnded + s.Reused; n > 0 {
			fmt.Fprintf(&b, ", %d not decided", n)
		}
		b.WriteString("\n")
		if s.Denied > 0 {
			fmt.Fprintf(&b, "  denied by reason: %s\n", reasonList(s.DeniedBy))
		}
		if s.Midstream > 0 {
			fmt.Fprintf(&b, "  %d midstream: the capture lacks the flow's first packet, so nothing was decided (\"replay\":\"midstream\")\n", s.Midstream)
		}
		if s.Reused > 0 {
			fmt.Fprintf(&b, "  %d reused the 5-tuple of a connection decided less than a linger ago: the engine gave them its verdict\n"+
				"    without a decision line, as the daemon does (\"replay\":\"reused\")\n", s.Reused)
		}
		if s.CaptureEnded > 0 {
			fmt.Fprintf(&b, "  %d undecided when the capture ends (\"replay\":\"capture-ended\")\n", s.CaptureEnded)
		}
	}
	if s.Format == FormatLog && s.LogSkipped > 0 {
		fmt.Fprintf(&b, "  %d log lines are not decisions and were skipped\n", s.LogSkipped)
	}
	if s.DNSSkipped > 0 {
		fmt.Fprintf(&b, "  DNS check skipped on %d lines (\"dns_check\":\"skipped\"): without --resolve, names are taken as verified,\n"+
			"    and rules whose names match by DNS on ports without a name could not match\n", s.DNSSkipped)
	}
	if len(s.Unresolved) > 0 {
		names := slices.Sorted(maps.Keys(s.Unresolved))
		if len(names) > 10 {
			names = append(names[:10], "...")
		}
		fmt.Fprintf(&b, "  --resolve has no answers for %d names allowed by the policy, so their flows were denied dns-error: %s\n",
			len(s.Unresolved), strings.Join(names, ", "))
	}
	if s.Cut > 0 {
		fmt.Fprintf(&b, "  %d flows lost packets to the capture's snap length; their lines say \"replay\":\"truncated\" (capture with -s 0)\n", s.Cut)
	}
	if p := s.packetNotes(); p != "" {
		fmt.Fprintf(&b, "  packets: %s\n", p)
	}
	if s.TruncatedEnd {
		b.WriteString("  the capture ends inside a packet (it was stopped hard): replayed up to it\n")
	}
	io.WriteString(w, b.String())
}

func (s *Summary) packetNotes() string {
	var parts []string
	add := func(n uint64, what string) {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(s.NotIPv4, "not IPv4")
	add(s.NotTCPUDP, "neither TCP nor UDP")
	add(s.Malformed, "malformed")
	add(s.BadChecksum, "bad checksum (dropped)")
	add(s.Invalid, "invalid TCP flags (dropped)")
	add(s.Stray, "resets outside any flow")
	add(s.Fragments, "fragments")
	add(s.Reassembled, "datagrams reassembled")
	add(s.FragmentsDropped, "fragments or unfinished datagrams dropped")
	add(s.Truncated, "cut short by the snap length")
	add(s.Evicted, "connections forgotten at the table's bound")
	add(s.BadTimestamps, "with timestamps out of range")
	return strings.Join(parts, ", ")
}

// reasons is reasonList in parentheses, or nothing.
func reasons(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	return " (" + reasonList(m) + ")"
}

// reasonList lists counts by key, most first: "3 rule, 1 limit".
func reasonList(m map[string]int) string {
	var parts []string
	for _, k := range sortedByCount(m) {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}

func writeCounts(b *strings.Builder, title string, m map[string]int) {
	if len(m) == 0 {
		return
	}
	fmt.Fprintf(b, "  %s:\n", title)
	for _, k := range sortedByCount(m) {
		fmt.Fprintf(b, "    %6d  %s\n", m[k], k)
	}
}

func sortedByCount(m map[string]int) []string {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int {
		return cmp.Or(cmp.Compare(m[b], m[a]), cmp.Compare(a, b))
	})
	return keys
}

func sizeString(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
