package liveness

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"

	"shoal/internal/scenario"
	"time"
)

// TestScenarios runs the scripts in testdata. A script is a list of
// commands, one a line; a command that produces output is followed by a
// line "----" and the output it must produce, up to a blank line. Times are
// seconds on a monotonic clock that starts at 0.
//
//	config self=n0 [tick=1s] [inactive=2]   a new spy and monitor
//	heard CONN NODE CHANNEL T               a frame arrived on connection CONN at T
//	traffic CONN NODE CHANNEL FROM TO EVERY frames every EVERY seconds from FROM to TO
//	forget CONN                             connection CONN closed
//	peers NODE...                           Monitor.SetPeers
//	checks NAME[@CHANNEL]=ok|fail[:DETAIL]... the local checks of the next ticks
//	tick T                                  one tick; prints the report
//	ticks FROM TO                           a tick every Tick from FROM to TO; prints the changes
//	json T                                  one tick; prints the report as JSON
func TestScenarios(t *testing.T) {
	scenario.RunFiles(t, "testdata/*.txt", func() scenario.Script { return new(script).run })
}

// script is the state of one scenario file.
type script struct {
	spy    *Spy
	mon    *Monitor
	tick   time.Duration
	checks []Check
}

var epoch = time.Unix(1_000_000, 0)

func at(s string) (time.Time, error) {
	f, err := strconv.ParseFloat(s, 64)
	return epoch.Add(time.Duration(math.Round(f * 1e9))), err
}

func (sc *script) run(cmd []string) (string, error) {
	if sc.mon == nil && cmd[0] != "config" {
		return "", fmt.Errorf("%s before config", cmd[0])
	}
	switch cmd[0] {
	case "config":
		cfg := Config{}
		for _, kv := range cmd[1:] {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "self":
				cfg.Self = v
			case "tick":
				d, err := time.ParseDuration(v)
				if err != nil {
					return "", err
				}
				cfg.Tick = d
			case "inactive":
				n, err := strconv.Atoi(v)
				if err != nil {
					return "", err
				}
				cfg.InactiveTicks = n
			default:
				return "", fmt.Errorf("unknown config %q", k)
			}
		}
		sc.spy = NewSpy()
		sc.mon = NewMonitor(cfg, sc.spy)
		sc.tick, sc.checks = sc.mon.cfg.Tick, nil
	case "heard":
		if len(cmd) != 5 {
			return "", fmt.Errorf("heard CONN NODE CHANNEL T")
		}
		conn, err := strconv.ParseUint(cmd[1], 10, 64)
		if err != nil {
			return "", err
		}
		now, err := at(cmd[4])
		if err != nil {
			return "", err
		}
		sc.spy.Heard(conn, cmd[2], cmd[3], now)
	case "traffic":
		if len(cmd) != 7 {
			return "", fmt.Errorf("traffic CONN NODE CHANNEL FROM TO EVERY")
		}
		conn, err := strconv.ParseUint(cmd[1], 10, 64)
		if err != nil {
			return "", err
		}
		from, err1 := at(cmd[4])
		to, err2 := at(cmd[5])
		every, err3 := strconv.ParseFloat(cmd[6], 64)
		if err := firstErr(err1, err2, err3); err != nil || every <= 0 {
			return "", fmt.Errorf("traffic: bad times: %v", err)
		}
		step := time.Duration(math.Round(every * 1e9))
		for now := from; !now.After(to); now = now.Add(step) {
			sc.spy.Heard(conn, cmd[2], cmd[3], now)
		}
	case "forget":
		conn, err := strconv.ParseUint(cmd[1], 10, 64)
		if err != nil {
			return "", err
		}
		sc.spy.Forget(conn)
	case "peers":
		sc.mon.SetPeers(cmd[1:])
	case "checks":
		sc.checks = nil
		for _, c := range cmd[1:] {
			name, result, _ := strings.Cut(c, "=")
			name, channel, _ := strings.Cut(name, "@")
			res, detail, _ := strings.Cut(result, ":")
			sc.checks = append(sc.checks, Check{Name: name, Channel: channel, OK: res == "ok", Detail: detail})
		}
	case "tick":
		now, err := at(cmd[1])
		if err != nil {
			return "", err
		}
		return render(sc.mon.Tick(now, sc.checks)), nil
	case "ticks":
		from, err1 := at(cmd[1])
		to, err2 := at(cmd[2])
		if err := firstErr(err1, err2); err != nil {
			return "", err
		}
		var b strings.Builder
		for now := from; !now.After(to); now = now.Add(sc.tick) {
			r := sc.mon.Tick(now, sc.checks)
			if len(r.Changes) > 0 {
				fmt.Fprintf(&b, "@%s %s\n", secs(now.Sub(epoch)), renderChanges(r.Changes))
			}
		}
		return strings.TrimSuffix(b.String(), "\n"), nil
	case "json":
		now, err := at(cmd[1])
		if err != nil {
			return "", err
		}
		j, err := json.MarshalIndent(sc.mon.Tick(now, sc.checks), "", "  ")
		return string(j), err
	default:
		return "", fmt.Errorf("unknown command %q", cmd[0])
	}
	return "", nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) }

func since(s *float64) string {
	if s == nil {
		return "never"
	}
	return strconv.FormatFloat(*s, 'f', -1, 64) + "s"
}

// render prints a report compactly: a line per node, an indented line per
// channel, then the changes.
func render(r Report) string {
	var b strings.Builder
	for _, n := range r.Nodes {
		if n.Local {
			fmt.Fprintf(&b, "%s local %s", n.Node, n.State)
			for i, c := range n.Checks {
				sep := ","
				if i == 0 {
					sep = " checks:"
				}
				fmt.Fprintf(&b, "%s %s", sep, c.Name)
				if c.Channel != "" {
					fmt.Fprintf(&b, "@%s", c.Channel)
				}
				if c.OK {
					b.WriteString(" ok")
				} else {
					fmt.Fprintf(&b, " failed %q", c.Detail)
				}
			}
			b.WriteString("\n")
		} else {
			fmt.Fprintf(&b, "%s %s %s\n", n.Node, n.State, since(n.SecondsSinceLastHeard))
		}
		for _, c := range n.Channels {
			fmt.Fprintf(&b, "  %s %s", c.Channel, c.State)
			if !n.Local {
				fmt.Fprintf(&b, " %s", since(c.SecondsSinceLastHeard))
			}
			b.WriteString("\n")
		}
	}
	if len(r.Changes) > 0 {
		fmt.Fprintf(&b, "changes: %s\n", renderChanges(r.Changes))
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func renderChanges(cs []Change) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		who := c.Node
		if c.Channel != "" {
			who += "/" + c.Channel
		}
		from := string(c.From)
		if from == "" {
			from = "new"
		}
		parts[i] = fmt.Sprintf("%s %s->%s", who, from, c.To)
	}
	return strings.Join(parts, ", ")
}
