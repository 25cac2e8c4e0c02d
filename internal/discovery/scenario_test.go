package discovery

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"

	"shoal/internal/scenario"
	"time"
)

// TestScenarios runs the scripts in testdata. A script is a list of
// commands, one a line; a command that produces output is followed by a
// line "----" and the output it must produce, up to a blank line. Times are
// seconds since the node started.
//
//	config [self=ID] [self_addr=A] [initial=D] [after_error=D] [after_nodedown=D] [regular=D] [initial_phase=D] [probe=D]
//	tick T                              a Tick; prints the actions
//	check T                             a CheckNow; prints the actions
//	backend T ok [ADDR...]              the backend answered
//	backend T error MSG...              the backend failed
//	probe T ADDR ok ID                  a probe was answered
//	probe T ADDR error MSG...           a probe failed
//	observe T [member] [members=ID@ADDR,...] [tried=ADDR@T,...]
//	status T                            a Tick, then the status
//	auto backend=ok:A,B|error:MSG|hang  how run answers the backend (hang: never)
//	auto probe ADDR=ok:ID|error:MSG|hang... how run answers probes (default: error refused)
//	run FROM TO                         steps every wake-up from FROM to TO, answering
//	                                    as auto says; prints the backend calls (with the
//	                                    retry type that scheduled them), targets and logs
func TestScenarios(t *testing.T) {
	scenario.RunFiles(t, "testdata/*.txt", func() scenario.Script { return new(script).run })
}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(s string) (time.Time, error) {
	f, err := strconv.ParseFloat(s, 64)
	return epoch.Add(time.Duration(math.Round(f * 1e9))), err
}

func secs(t time.Time) string {
	return strconv.FormatFloat(t.Sub(epoch).Seconds(), 'f', -1, 64)
}

// script is the state of one scenario file.
type script struct {
	m           *Machine
	autoBackend string
	autoProbe   map[Addr]string
}

func (sc *script) run(cmd []string) (string, error) {
	if sc.m == nil && cmd[0] != "config" {
		return "", fmt.Errorf("%s before config", cmd[0])
	}
	var now time.Time
	if cmd[0] != "config" && cmd[0] != "auto" {
		if len(cmd) < 2 {
			return "", fmt.Errorf("%s: no time", cmd[0])
		}
		var err error
		if now, err = at(cmd[1]); err != nil {
			return "", err
		}
	}
	switch cmd[0] {
	case "config":
		var cfg Config
		for _, kv := range cmd[1:] {
			k, v, _ := strings.Cut(kv, "=")
			if k == "self" {
				cfg.Self = v
				continue
			}
			if k == "self_addr" {
				cfg.SelfAddrs = append(cfg.SelfAddrs, Addr(v))
				continue
			}
			d, err := time.ParseDuration(v)
			if err != nil {
				return "", err
			}
			switch k {
			case "initial":
				cfg.InitialInterval = d
			case "after_error":
				cfg.AfterErrorInterval = d
			case "after_nodedown":
				cfg.AfterNodedownInterval = d
			case "regular":
				cfg.RegularInterval = d
			case "initial_phase":
				cfg.InitialPhase = d
			case "probe":
				cfg.ProbeInterval = d
			default:
				return "", fmt.Errorf("unknown config %q", k)
			}
		}
		sc.m = NewMachine(cfg, epoch)
		sc.autoBackend, sc.autoProbe = "ok:", map[Addr]string{}
	case "tick":
		return renderActions(sc.m.Step(now, Tick{})), nil
	case "check":
		return renderActions(sc.m.Step(now, CheckNow{})), nil
	case "backend":
		if len(cmd) < 3 {
			return "", errors.New("backend T ok|error ...")
		}
		var ev BackendDone
		switch cmd[2] {
		case "ok":
			for _, a := range cmd[3:] {
				ev.Addrs = append(ev.Addrs, Addr(a))
			}
		case "error":
			ev.Err = errors.New(strings.Join(cmd[3:], " "))
		default:
			return "", fmt.Errorf("backend: %q: want ok or error", cmd[2])
		}
		acts := renderActions(sc.m.Step(now, ev))
		return strings.TrimPrefix(acts+"\n"+sc.nextLine(), "\n"), nil
	case "probe":
		if len(cmd) < 5 {
			return "", errors.New("probe T ADDR ok ID | probe T ADDR error MSG")
		}
		ev := ProbeDone{Addr: Addr(cmd[2])}
		switch cmd[3] {
		case "ok":
			ev.NodeID = cmd[4]
		case "error":
			ev.Err = errors.New(strings.Join(cmd[4:], " "))
		default:
			return "", fmt.Errorf("probe: %q: want ok or error", cmd[3])
		}
		return renderActions(sc.m.Step(now, ev)), nil
	case "observe":
		ev := Observed{Tried: map[Addr]time.Time{}}
		for _, w := range cmd[2:] {
			k, v, _ := strings.Cut(w, "=")
			switch k {
			case "member":
				ev.Member = true
			case "members":
				for _, m := range strings.Split(v, ",") {
					id, addr, ok := strings.Cut(m, "@")
					if !ok {
						return "", fmt.Errorf("members: %q: want ID@ADDR", m)
					}
					ev.Members = append(ev.Members, Member{ID: id, Addr: Addr(addr)})
				}
			case "tried":
				for _, tr := range strings.Split(v, ",") {
					addr, ts, ok := strings.Cut(tr, "@")
					if !ok {
						return "", fmt.Errorf("tried: %q: want ADDR@T", tr)
					}
					tt, err := at(ts)
					if err != nil {
						return "", err
					}
					ev.Tried[Addr(addr)] = tt
				}
			default:
				return "", fmt.Errorf("observe: unknown %q", k)
			}
		}
		return renderActions(sc.m.Step(now, ev)), nil
	case "status":
		acts := renderActions(sc.m.Step(now, Tick{}))
		return strings.TrimPrefix(acts+"\n"+renderStatus(sc.m.Status()), "\n"), nil
	case "auto":
		if len(cmd) > 1 && cmd[1] == "probe" {
			for _, w := range cmd[2:] {
				a, how, ok := strings.Cut(w, "=")
				if !ok {
					return "", fmt.Errorf("auto probe ADDR=ok:ID|error:MSG|hang")
				}
				sc.autoProbe[Addr(a)] = how
			}
			break
		}
		for _, w := range cmd[1:] {
			k, v, _ := strings.Cut(w, "=")
			if k != "backend" {
				return "", fmt.Errorf("auto: unknown %q", k)
			}
			sc.autoBackend = v
		}
	case "run":
		if len(cmd) != 3 {
			return "", errors.New("run FROM TO")
		}
		to, err := at(cmd[2])
		if err != nil {
			return "", err
		}
		return sc.simulate(now, to), nil
	default:
		return "", fmt.Errorf("unknown command %q", cmd[0])
	}
	return "", nil
}

// simulate steps the machine at every wake-up in [from, to], answering
// its actions at once as auto says. Three or more backend calls in a row
// at the same interval and retry type are printed as one line.
func (sc *script) simulate(from, to time.Time) string {
	type call struct {
		at    time.Time
		retry RetryType
	}
	var (
		b     strings.Builder
		calls []call
	)
	flush := func() {
		for i := 0; i < len(calls); {
			j := i + 1
			if j < len(calls) {
				gap := calls[j].at.Sub(calls[i].at)
				for j < len(calls) && calls[j].retry == calls[i].retry && calls[j].at.Sub(calls[j-1].at) == gap {
					j++
				}
				if j-i >= 3 {
					fmt.Fprintf(&b, "@%s..@%s call-backend every %s (%s) x%d\n", secs(calls[i].at), secs(calls[j-1].at), gap, calls[i].retry, j-i)
					i = j
					continue
				}
			}
			fmt.Fprintf(&b, "@%s call-backend (%s)\n", secs(calls[i].at), calls[i].retry)
			i++
		}
		calls = calls[:0]
	}
	now := from
	for steps := 0; steps < 100000; steps++ {
		queue := []Event{Tick{}}
		for len(queue) > 0 {
			ev := queue[0]
			queue = queue[1:]
			retry := sc.m.retry
			for _, a := range sc.m.Step(now, ev) {
				switch a := a.(type) {
				case CallBackend:
					calls = append(calls, call{now, retry})
					kind, arg, _ := strings.Cut(sc.autoBackend, ":")
					switch kind {
					case "ok":
						var ev BackendDone
						for _, s := range strings.Split(arg, ",") {
							if s != "" {
								ev.Addrs = append(ev.Addrs, Addr(s))
							}
						}
						queue = append(queue, ev)
					case "error":
						queue = append(queue, BackendDone{Err: errors.New(arg)})
					}
				case Probe:
					kind, arg, _ := strings.Cut(sc.autoProbe[a.Addr], ":")
					switch kind {
					case "ok":
						queue = append(queue, ProbeDone{Addr: a.Addr, NodeID: arg})
					case "hang":
					case "error":
						queue = append(queue, ProbeDone{Addr: a.Addr, Err: errors.New(arg)})
					default:
						queue = append(queue, ProbeDone{Addr: a.Addr, Err: errors.New("connection refused")})
					}
				default:
					flush()
					fmt.Fprintf(&b, "@%s %s\n", secs(now), renderAction(a))
				}
			}
		}
		next := sc.m.NextWake()
		if next.IsZero() || next.After(to) {
			break
		}
		now = next
	}
	flush()
	return strings.TrimSuffix(b.String(), "\n")
}

func (sc *script) nextLine() string {
	if sc.m.running {
		return "next: running"
	}
	return fmt.Sprintf("next @%s (%s)", secs(sc.m.next), sc.m.retry)
}

func renderActions(acts []Action) string {
	lines := make([]string, len(acts))
	for i, a := range acts {
		lines[i] = renderAction(a)
	}
	return strings.Join(lines, "\n")
}

func renderAction(a Action) string {
	switch a := a.(type) {
	case CallBackend:
		return "call-backend"
	case Probe:
		return "probe " + string(a.Addr)
	case TargetsChanged:
		return "targets " + joinAddrs(a.Targets)
	case Log:
		var b strings.Builder
		fmt.Fprintf(&b, "log %s %q", strings.ToLower(a.Level.String()), a.Msg)
		for i := 0; i+1 < len(a.Attrs); i += 2 {
			fmt.Fprintf(&b, " %v=%v", a.Attrs[i], a.Attrs[i+1])
		}
		return b.String()
	}
	return fmt.Sprintf("%T", a)
}

func joinAddrs(as []Addr) string {
	if len(as) == 0 {
		return "-"
	}
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = string(a)
	}
	return strings.Join(s, ",")
}

func renderStatus(st Status) string {
	var b strings.Builder
	fmt.Fprintf(&b, "phase %s, %d calls", st.Phase, st.BackendCalls)
	if st.BackendRunning {
		fmt.Fprintf(&b, ", running since @%s", secs(*st.RunningSince))
	} else {
		fmt.Fprintf(&b, ", next @%s (%s)", secs(*st.NextCheck), st.RetryType)
	}
	if st.CheckQueued {
		b.WriteString(", check queued")
	}
	b.WriteString("\n")
	if r := st.LastResult; r != nil {
		if r.OK {
			fmt.Fprintf(&b, "last @%s ok [%s] then %s\n", secs(r.At), joinAddrs(r.Nodes), r.RetryType)
		} else {
			fmt.Fprintf(&b, "last @%s error %q then %s\n", secs(r.At), r.Error, r.RetryType)
		}
	}
	fmt.Fprintf(&b, "discovered %s; joined %s; not discovered %s; targets %s\n", joinAddrs(st.Discovered), joinAddrs(st.Joined), joinAddrs(st.NotDiscovered), joinAddrs(st.JoinTargets))
	for _, n := range st.Nodes {
		var f []string
		if n.NodeID != "" {
			f = append(f, n.NodeID)
		}
		for _, x := range []struct {
			on   bool
			name string
		}{{n.Self, "self"}, {n.Discovered, "discovered"}, {n.Up, "up"}, {n.Joined, "joined"}, {n.Probing, "probing"}, {n.JoinTarget, "target"}} {
			if x.on {
				f = append(f, x.name)
			}
		}
		if n.Nodeup != nil {
			f = append(f, "nodeup@"+secs(*n.Nodeup))
		}
		if n.Nodedown != nil {
			f = append(f, "nodedown@"+secs(*n.Nodedown))
		}
		if n.LastError != "" {
			f = append(f, strconv.Quote(n.LastError))
		}
		fmt.Fprintf(&b, "  %s %s\n", n.Addr, strings.Join(f, " "))
	}
	if len(st.Unavailable) > 0 {
		var u []string
		for _, x := range st.Unavailable {
			u = append(u, string(x.Addr))
		}
		fmt.Fprintf(&b, "unavailable %s\n", strings.Join(u, ","))
	}
	if st.InitialDone {
		fmt.Fprintf(&b, "ready since @%s", secs(*st.InitialDoneAt))
	} else {
		b.WriteString("not ready: " + strings.Join(slices.Clone(st.Missing), "; "))
	}
	return b.String()
}
