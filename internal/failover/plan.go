// Package failover decides failovers: pure functions of the vBucket map
// and of what the surviving nodes report, no clock, no goroutine, no I/O.
// Plan is the operator's manual failover (shoal failover); automatic
// failover (a later issue) decides when to run it.
package failover

import (
	"errors"
	"fmt"
	"slices"

	"shoal/internal/vbmap"
)

// Seqnos tells how far a surviving node's copy of a vBucket goes: its high
// seqnos, one per engine. ok is false when the node did not answer (it is
// not a candidate).
type Seqnos func(node string, vb uint16) (seqnos []uint64, ok bool)

// ErrLastCopy is returned by Plan when failing the node over would leave a
// vBucket without any copy and force is not set.
var ErrLastCopy = errors.New("failover: a vbucket would have no copy left")

// Result is a planned failover.
type Result struct {
	// Chains is the new map's chains: the failed node removed everywhere;
	// where it was active, the surviving replica that holds the most
	// (the sum of its engines' high seqnos; ties: the first in the chain)
	// becomes active, the other replicas follow it.
	Chains [][]string
	// Promoted maps each vBucket whose active changed to its new active.
	Promoted map[uint16]string
	// Lost are the vBuckets that had no surviving copy (only with force):
	// they get an empty active on the surviving node with the fewest
	// actives, their data is gone.
	Lost []uint16
}

// Plan fails node over in m. survivors are the members that may hold
// copies (active members other than node); seqnos says what each holds.
// A replica that does not answer is not promoted (and stays in its chain:
// it is not the node being failed over). Without force, a vBucket with no
// answering copy left fails the plan with ErrLastCopy naming them all.
func Plan(m *vbmap.Map, node string, survivors []string, seqnos Seqnos, force bool) (Result, error) {
	alive := map[string]bool{}
	for _, s := range survivors {
		if s != node {
			alive[s] = true
		}
	}
	if len(alive) == 0 {
		return Result{}, fmt.Errorf("failover: %s is the last node; there is nothing to fail over to", node)
	}
	res := Result{Chains: make([][]string, m.Len()), Promoted: map[uint16]string{}}
	actives := map[string]int{}
	for vb := range m.Len() {
		res.Chains[vb] = slices.DeleteFunc(slices.Clone(m.VBuckets[vb].Chain), func(n string) bool { return n == node })
		if a := m.Active(uint16(vb)); a != node && a != "" {
			actives[a]++
		}
	}
	var noCopy []uint16
	for vb := range m.Len() {
		v := uint16(vb)
		if m.Active(v) != node {
			continue
		}
		best, bestSum := -1, uint64(0)
		for i, n := range res.Chains[vb] {
			if !alive[n] {
				continue
			}
			s, ok := seqnos(n, v)
			if !ok {
				continue
			}
			var sum uint64
			for _, x := range s {
				sum += x
			}
			if best < 0 || sum > bestSum {
				best, bestSum = i, sum
			}
		}
		if best < 0 {
			noCopy = append(noCopy, v)
			continue
		}
		chain := res.Chains[vb]
		head := chain[best]
		chain = append([]string{head}, slices.Delete(slices.Clone(chain), best, best+1)...)
		res.Chains[vb] = chain
		res.Promoted[v] = head
		actives[head]++
	}
	if len(noCopy) > 0 && !force {
		return Result{}, fmt.Errorf("%w: vbuckets %s (use --force to fail over anyway: their data is lost)", ErrLastCopy, ranges(noCopy))
	}
	names := make([]string, 0, len(alive))
	for n := range alive {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, vb := range noCopy {
		least := names[0]
		for _, n := range names[1:] {
			if actives[n] < actives[least] {
				least = n
			}
		}
		rest := slices.DeleteFunc(res.Chains[vb], func(n string) bool { return n == least })
		res.Chains[vb] = append([]string{least}, rest...)
		res.Promoted[vb] = least
		actives[least]++
		res.Lost = append(res.Lost, vb)
	}
	return res, nil
}

// Recover gives a failed node, back again, a place in the chains that
// are short of copies (fewer than 1+replicas), as their last replica: it
// then fills them by replication from their actives (after rolling back
// what the new actives' histories do not hold). It holds no active until a
// rebalance moves some to it.
func Recover(m *vbmap.Map, node string) [][]string {
	chains := m.Chains()
	for vb, c := range chains {
		if len(c) > 0 && len(c) < 1+m.Replicas && !slices.Contains(c, node) {
			chains[vb] = append(c, node)
		}
	}
	return chains
}

// ranges writes vBucket numbers compactly: 1-3,7,9-10.
func ranges(vbs []uint16) string {
	var out []byte
	for i := 0; i < len(vbs); {
		j := i
		for j+1 < len(vbs) && vbs[j+1] == vbs[j]+1 {
			j++
		}
		if len(out) > 0 {
			out = append(out, ',')
		}
		out = fmt.Appendf(out, "%d", vbs[i])
		if j > i {
			out = fmt.Appendf(out, "-%d", vbs[j])
		}
		i = j + 1
	}
	return string(out)
}
