package chaos

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/anishathalye/porcupine"
)

func op(client int, in Input, out Output, call, ret int64) Op {
	if out.Outcome == OutUnknown {
		ret = math.MaxInt64
	}
	return Op{Client: client, In: in, Out: out, Call: call, Return: ret}
}

// TestModel: histories the model must accept and reject, indeterminate
// writes included (they may take effect late, or never).
func TestModel(t *testing.T) {
	put := func(k, v string) Input { return Input{Kind: OpPut, Key: k, Value: v} }
	get := func(k string) Input { return Input{Kind: OpGet, Key: k} }
	cas := func(k, exp, v string) Input { return Input{Kind: OpCAS, Key: k, Expect: exp, Value: v} }
	ok := Output{Outcome: OutOK}
	saw := func(v string) Output { return Output{Outcome: OutOK, Value: v} }
	unknown := Output{Outcome: OutUnknown}
	for _, tt := range []struct {
		name string
		ops  []Op
		want porcupine.CheckResult
	}{
		{"read your write", []Op{op(0, put("a", "1"), ok, 0, 10), op(1, get("a"), saw("1"), 20, 30)}, porcupine.Ok},
		{"lost acknowledged write", []Op{op(0, put("a", "1"), ok, 0, 10), op(0, put("a", "2"), ok, 11, 20), op(1, get("a"), saw("1"), 30, 40)}, porcupine.Illegal},
		{"lost write read as absent", []Op{op(0, put("a", "1"), ok, 0, 10), op(1, get("a"), Output{Outcome: OutNotFound}, 30, 40)}, porcupine.Illegal},
		{"indeterminate write never applied", []Op{op(0, put("a", "1"), unknown, 0, 0), op(1, get("a"), Output{Outcome: OutNotFound}, 30, 40)}, porcupine.Ok},
		{"indeterminate write applied late", []Op{op(0, put("a", "1"), unknown, 0, 0), op(1, get("a"), Output{Outcome: OutNotFound}, 30, 40), op(1, get("a"), saw("1"), 50, 60)}, porcupine.Ok},
		{"indeterminate write seen then gone", []Op{op(0, put("a", "1"), unknown, 0, 0), op(1, get("a"), saw("1"), 30, 40), op(1, get("a"), Output{Outcome: OutNotFound}, 50, 60)}, porcupine.Illegal},
		{"cas", []Op{op(0, put("a", "1"), ok, 0, 10), op(1, cas("a", "1", "2"), ok, 20, 30), op(2, cas("a", "1", "3"), Output{Outcome: OutMismatch}, 40, 50), op(2, get("a"), saw("2"), 60, 70)}, porcupine.Ok},
		{"cas on a lost value", []Op{op(0, put("a", "1"), ok, 0, 10), op(0, put("a", "2"), ok, 11, 12), op(1, cas("a", "1", "3"), ok, 20, 30)}, porcupine.Illegal},
		{"keys apart", []Op{op(0, put("a", "1"), ok, 0, 10), op(1, get("b"), Output{Outcome: OutNotFound}, 20, 30)}, porcupine.Ok},
	} {
		t.Run(tt.name, func(t *testing.T) {
			html := filepath.Join(t.TempDir(), "v.html")
			got, err := Linearizable(tt.ops, 0, html)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			if _, err := os.Stat(html); (err == nil) != (got == porcupine.Illegal) {
				t.Fatalf("visualization written: %v, verdict %v", err == nil, got)
			}
		})
	}
}

func TestCheckSet(t *testing.T) {
	r := CheckSet([]string{"a", "b", "c"}, []string{"x", "y"}, map[string]bool{"a": true, "c": true, "y": true})
	if r.Acknowledged != 3 || r.Found != 2 || len(r.Lost) != 1 || r.Lost[0] != "b" || r.Unknown != 2 || r.UnknownFound != 1 {
		t.Fatalf("%+v", r)
	}
}
