package failover

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"shoal/internal/scenario"
	"shoal/internal/vbmap"
)

// TestAutoScenarios runs the scripts in testdata/*.txt. A script is a list
// of commands, one a line; a command that prints is followed by "----"
// and its output, up to a blank line (-rewrite writes them).
//
//	config [grace=N] [stale=N] [max=N] [disabled]   a new Auto (enabled, max 1)
//	members NODE...             the active members (voters too, unless voters is given)
//	voters NODE...              the voters
//	self NODE                   the deciding node (the leader)
//	map CHAIN...                one chain per vBucket, nodes joined by commas
//	count N                     automatic failovers so far
//	rebalancing on|off
//	report NODE TICK [inactive=N,N] [notready=WHY]   a report received at TICK
//	tick T                      Step at T; prints the decision
//	retry                       Auto.Retry
func TestAutoScenarios(t *testing.T) {
	scenario.RunFiles(t, "testdata/*.txt", func() scenario.Script {
		return (&autoScenario{in: Input{Reports: map[string]Report{}}}).run
	})
}

type autoScenario struct {
	auto *Auto
	in   Input
}

func (s *autoScenario) run(cmd []string) (string, error) {
	switch cmd[0] {
	case "config":
		cfg := AutoConfig{Enabled: true, MaxCount: 1}
		for _, a := range cmd[1:] {
			k, v, _ := strings.Cut(a, "=")
			n, _ := strconv.Atoi(v)
			switch k {
			case "grace":
				cfg.GraceTicks = n
			case "stale":
				cfg.StaleTicks = n
			case "max":
				cfg.MaxCount = n
			case "disabled":
				cfg.Enabled = false
			default:
				return "", fmt.Errorf("config: unknown %q", a)
			}
		}
		s.auto = NewAuto(cfg)
	case "members":
		s.in.Members = cmd[1:]
		s.in.Voters = cmd[1:]
	case "voters":
		s.in.Voters = cmd[1:]
	case "self":
		s.in.Self = cmd[1]
	case "map":
		chains := make([][]string, len(cmd)-1)
		for i, c := range cmd[1:] {
			chains[i] = strings.Split(c, ",")
		}
		s.in.Map = (&vbmap.Map{}).Next(1, 1, chains)
	case "count":
		s.in.Count, _ = strconv.Atoi(cmd[1])
	case "rebalancing":
		s.in.Rebalancing = cmd[1] == "on"
	case "report":
		at, err := strconv.ParseUint(cmd[2], 10, 64)
		if err != nil {
			return "", err
		}
		r := Report{At: at}
		for _, a := range cmd[3:] {
			k, v, _ := strings.Cut(a, "=")
			switch k {
			case "inactive":
				r.Inactive = strings.Split(v, ",")
			case "notready":
				r.NotReady, r.Why = true, v
			default:
				return "", fmt.Errorf("report: unknown %q", a)
			}
		}
		s.in.Reports[cmd[1]] = r
	case "retry":
		s.auto.Retry()
	case "tick":
		tick, err := strconv.ParseUint(cmd[1], 10, 64)
		if err != nil {
			return "", err
		}
		s.in.Tick = tick
		if r, ok := s.in.Reports[s.in.Self]; ok {
			r.At = tick
			s.in.Reports[s.in.Self] = r
		}
		d := s.auto.Step(s.in)
		return formatDecision(d), nil
	default:
		return "", fmt.Errorf("unknown command %q", cmd[0])
	}
	return "", nil
}

func formatDecision(d Decision) string {
	var b strings.Builder
	fmt.Fprintf(&b, "phase %s", d.Phase)
	if len(d.Down) > 0 {
		var nodes []string
		for _, dn := range d.Down {
			nodes = append(nodes, dn.Node)
		}
		fmt.Fprintf(&b, " ticks %d down %s", d.Ticks, strings.Join(nodes, ","))
	}
	if len(d.Failover) > 0 {
		fmt.Fprintf(&b, "\nfailover %s", strings.Join(d.Failover, ","))
	}
	if d.Refused != nil {
		fmt.Fprintf(&b, "\nrefused %s: %s", d.Refused.Rule, d.Refused.Detail)
	}
	for _, n := range slices.Sorted(func(yield func(string) bool) {
		for k := range d.Suspected {
			if !yield(k) {
				return
			}
		}
	}) {
		fmt.Fprintf(&b, "\nsuspected %s by %s", n, strings.Join(d.Suspected[n], ","))
	}
	if len(d.Stale) > 0 {
		fmt.Fprintf(&b, "\nstale %s", strings.Join(d.Stale, ","))
	}
	for _, e := range d.Events {
		fmt.Fprintf(&b, "\n> %s", e)
	}
	return b.String()
}
