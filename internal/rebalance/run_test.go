package rebalance

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of the scenario files")

// TestRunScenarios runs the scripts in testdata/*.txt. A script is a list
// of commands, one a line; a command that prints is followed by "----"
// and its output, up to a blank line (-rewrite writes them).
//
//	config [moves=N] [rate=N] [catchup=N] [build=MS] [drain=MS]
//	move VB FROM TO             a move of the plan (chains: nodes joined by commas, - for none)
//	obs KIND [vb=N] [node=ID] [lag=N] [bytes=N] [why=WORD]   an observation for the next step
//	step MS                     Step at MS; prints the actions and the progress
//	stop [WORD...]              Stop; prints the actions and the progress
//	abort [WORD...]             Abort; prints the actions and the progress
func TestRunScenarios(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenario files: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) { runScenario(t, file) })
	}
}

func runScenario(t *testing.T, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	var out strings.Builder
	var (
		cfg  Config
		plan Result
		run  *Run
		obs  []Observation
	)
	failed := false
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		out.WriteString(line + "\n")
		cmd := strings.Fields(line)
		if len(cmd) == 0 || strings.HasPrefix(cmd[0], "#") {
			continue
		}
		var got []string
		switch cmd[0] {
		case "config":
			for _, kv := range cmd[1:] {
				k, v, _ := strings.Cut(kv, "=")
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					t.Fatalf("%s:%d: %v", file, i+1, err)
				}
				switch k {
				case "moves":
					cfg.MaxMoves = int(n)
				case "rate":
					cfg.Rate = n
				case "catchup":
					cfg.CatchUp = uint64(n)
				case "build":
					cfg.BuildTimeout = n
				case "drain":
					cfg.DrainTimeout = n
				default:
					t.Fatalf("%s:%d: unknown setting %s", file, i+1, k)
				}
			}
			continue
		case "move":
			if len(cmd) != 4 {
				t.Fatalf("%s:%d: move VB FROM TO", file, i+1)
			}
			vb, _ := strconv.Atoi(cmd[1])
			chain := func(s string) []string {
				if s == "-" {
					return nil
				}
				return strings.Split(s, ",")
			}
			from, to := chain(cmd[2]), chain(cmd[3])
			mv := Move{VBucket: uint16(vb), From: from, To: to, Takeover: len(from) == 0 || from[0] != to[0]}
			for _, n := range to {
				if !contains(from, n) {
					mv.Build = append(mv.Build, n)
				}
			}
			for _, n := range from {
				if !contains(to, n) {
					mv.Drop = append(mv.Drop, n)
				}
			}
			plan.Moves = append(plan.Moves, mv)
			continue
		case "obs":
			o := Observation{Kind: ObsKind(cmd[1])}
			for _, kv := range cmd[2:] {
				k, v, _ := strings.Cut(kv, "=")
				n, _ := strconv.ParseInt(v, 10, 64)
				switch k {
				case "vb":
					o.VBucket = uint16(n)
				case "node":
					o.Node = v
				case "lag":
					o.Lag = uint64(n)
				case "bytes":
					o.Bytes = n
				case "why":
					o.Why = v
				}
			}
			obs = append(obs, o)
			continue
		case "step", "stop", "abort":
			if run == nil {
				run = NewRun(plan, cfg)
			}
			var acts []Action
			if cmd[0] == "step" {
				ms, err := strconv.ParseInt(cmd[1], 10, 64)
				if err != nil {
					t.Fatalf("%s:%d: %v", file, i+1, err)
				}
				acts = run.Step(ms, obs)
				obs = nil
			} else if cmd[0] == "stop" {
				acts = run.Stop(strings.Join(cmd[1:], " "))
			} else {
				acts = run.Abort(strings.Join(cmd[1:], " "))
			}
			for _, a := range acts {
				got = append(got, a.String())
			}
			p := run.Progress()
			line := fmt.Sprintf("%s done %d/%d moving %d abandoned %d bytes %d", p.State, p.Done, p.Total, p.Moving, p.Abandoned, p.Bytes)
			if p.Reason != "" {
				line += ": " + p.Reason
			}
			got = append(got, line)
			if run.Rebalancing() != (p.State == Running || p.State == Stopping) {
				t.Fatalf("%s:%d: Rebalancing %v in state %s", file, i+1, run.Rebalancing(), p.State)
			}
		default:
			t.Fatalf("%s:%d: unknown command %q", file, i+1, cmd[0])
		}
		// Compare with the expected block.
		var want []string
		j := i + 1
		if j < len(lines) && lines[j] == "----" {
			for j++; j < len(lines) && lines[j] != ""; j++ {
				want = append(want, lines[j])
			}
		} else {
			j = i + 1
		}
		out.WriteString("----\n")
		for _, g := range got {
			out.WriteString(g + "\n")
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			failed = true
			if !*rewrite {
				t.Errorf("%s:%d: %s\ngot:\n%s\nwant:\n%s", file, i+1, line, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		}
		i = j - 1
		if j < len(lines) && lines[j] == "" {
			out.WriteString("\n")
			i = j
		}
	}
	if failed && *rewrite {
		if err := os.WriteFile(file, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func contains(s []string, x string) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

// TestRunProperties drives runs with random observations (progress,
// freezes, drains, commits that succeed or fail, nodes down, stops, time
// passing) and checks: never more than MaxMoves in flight; a frozen
// active is thawed unless its move committed or its node is down; copies
// are dropped only for committed moves, and pending copies cancelled
// only for moves that did not commit; the run ends Done or Stopped.
func TestRunProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		nodes := []string{"a", "b", "c", "d"}
		nm := rapid.IntRange(1, 8).Draw(rt, "moves")
		var plan Result
		for vb := range nm {
			from := rapid.Permutation(nodes).Draw(rt, fmt.Sprintf("from%d", vb))[:2]
			to := rapid.Permutation(nodes).Draw(rt, fmt.Sprintf("to%d", vb))[:2]
			mv := Move{VBucket: uint16(vb), From: from, To: to, Takeover: from[0] != to[0]}
			for _, n := range to {
				if !contains(from, n) {
					mv.Build = append(mv.Build, n)
				}
			}
			for _, n := range from {
				if !contains(to, n) {
					mv.Drop = append(mv.Drop, n)
				}
			}
			plan.Moves = append(plan.Moves, mv)
		}
		cfg := Config{MaxMoves: rapid.IntRange(1, 4).Draw(rt, "max"), CatchUp: 10, BuildTimeout: 1000, DrainTimeout: 500}
		r := NewRun(plan, cfg)
		type vbState struct {
			frozen, committed, commitAsked bool
			proposed                       bool // a commit was ever asked
			building                       map[string]bool
		}
		st := map[uint16]*vbState{}
		for vb := range nm {
			st[uint16(vb)] = &vbState{building: map[string]bool{}}
		}
		down := map[string]bool{}
		now := int64(0)
		check := func(acts []Action) {
			for _, a := range acts {
				s := st[a.VBucket]
				if down[a.Node] {
					rt.Fatalf("%v sent to a node down", a)
				}
				switch a.Kind {
				case Build:
					s.building[a.Node] = true
				case Cancel:
					if s.committed {
						rt.Fatalf("%v for a committed move", a)
					}
					delete(s.building, a.Node)
				case Freeze:
					s.frozen = true
				case Thaw:
					if !s.frozen || s.committed {
						rt.Fatalf("%v: frozen %v committed %v", a, s.frozen, s.committed)
					}
					s.frozen = false
				case Commit:
					s.commitAsked, s.proposed = true, true
				case Drop:
					if !s.committed {
						rt.Fatalf("%v before the commit", a)
					}
				}
			}
			if m := r.Progress().Moving; m > cfg.MaxMoves {
				rt.Fatalf("%d moves in flight, max %d", m, cfg.MaxMoves)
			}
		}
		steps := rapid.IntRange(1, 60).Draw(rt, "steps")
		for i := range steps {
			var obs []Observation
			for vb := range nm {
				mv := plan.Moves[vb]
				s := st[uint16(vb)]
				switch rapid.IntRange(0, 9).Draw(rt, fmt.Sprintf("obs%d-%d", i, vb)) {
				case 0, 1:
					for n := range s.building {
						obs = append(obs, Observation{Kind: ObsProgress, VBucket: uint16(vb), Node: n, Lag: uint64(rapid.IntRange(0, 20).Draw(rt, "lag")), Bytes: 100})
					}
				case 2:
					if s.frozen {
						obs = append(obs, Observation{Kind: ObsFrozen, VBucket: uint16(vb), Node: mv.From[0]})
					}
				case 3:
					if s.frozen {
						obs = append(obs, Observation{Kind: ObsDrained, VBucket: uint16(vb), Node: mv.To[0]})
					}
				case 4:
					if s.commitAsked && !s.committed {
						s.committed = true
						s.frozen = false // the map made the old active a replica or nothing
						obs = append(obs, Observation{Kind: ObsCommitted, VBucket: uint16(vb)})
					}
				case 5:
					if s.commitAsked && !s.committed && rapid.Bool().Draw(rt, "fail commit") {
						s.commitAsked = false
						obs = append(obs, Observation{Kind: ObsCommitFailed, VBucket: uint16(vb), Why: "revision"})
					}
				}
			}
			switch rapid.IntRange(0, 59).Draw(rt, fmt.Sprintf("stop%d", i)) {
			case 0, 1:
				check(r.Stop("operator"))
			case 2:
				acts := r.Abort("leadership lost")
				check(acts)
				for _, s := range st {
					if s.frozen && s.proposed && !s.committed {
						// A commit proposed, its outcome unknown here:
						// the old active's lease ends the freeze.
						s.frozen, s.commitAsked = false, false
					}
				}
			}
			if rapid.IntRange(0, 19).Draw(rt, fmt.Sprintf("down%d", i)) == 0 {
				n := rapid.SampledFrom(nodes).Draw(rt, "node down")
				down[n] = true
				obs = append(obs, Observation{Kind: ObsNodeDown, Node: n})
			}
			now += int64(rapid.IntRange(0, 300).Draw(rt, fmt.Sprintf("dt%d", i)))
			check(r.Step(now, obs))
		}
		// Let time run out: every move ends (pending commits answered).
		for range 10 {
			var obs []Observation
			for vb, s := range st {
				if s.commitAsked && !s.committed {
					s.committed, s.frozen = true, false
					obs = append(obs, Observation{Kind: ObsCommitted, VBucket: vb})
				}
			}
			now += 2000
			check(r.Step(now, obs))
		}
		p := r.Progress()
		if p.State != Done && p.State != Stopped {
			rt.Fatalf("run still %s: %+v", p.State, p)
		}
		for vb, s := range st {
			if s.frozen && !down[plan.Moves[vb].From[0]] {
				rt.Fatalf("vbucket %d left frozen on %s", vb, plan.Moves[vb].From[0])
			}
		}
	})
}
