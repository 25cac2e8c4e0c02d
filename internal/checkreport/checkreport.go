// Package checkreport writes what an offline check of a node's files
// (shoal check) finds, one line per problem, and counts the problems and
// the repairs, so that every engine's check words its findings alike.
package checkreport

import (
	"fmt"
	"io"
)

// Findings counts the problems of one check and writes them to Out.
type Findings struct {
	Out      io.Writer
	Repair   bool // run the fixes of repairable problems
	Problems int  // problems found, repaired or not
	Repaired int  // problems whose fix ran without error
	// RepairNote ends the line of a problem Problem could repair, when
	// Repair is not set: e.g. " (--repair mends it)".
	RepairNote string
}

// Problem reports a problem of path: one that fix mends (Repairable, with
// RepairNote), or, when fix is nil, one that todo says what to do about.
func (f *Findings) Problem(path, what, todo string, fix func() error) {
	if fix == nil {
		f.Unrepairable(path, what, todo)
		return
	}
	f.Repairable(path, what, f.RepairNote, fix)
}

// Repairable reports a problem of path that fix mends. With Repair set
// fix runs, and the line says "repaired" or why it could not; otherwise
// the line ends with note (say what the repair would do, e.g. " (--repair
// mends it)").
func (f *Findings) Repairable(path, what, note string, fix func() error) {
	f.Problems++
	if !f.Repair {
		fmt.Fprintf(f.Out, "%s: %s%s\n", path, what, note)
		return
	}
	if err := fix(); err != nil {
		fmt.Fprintf(f.Out, "%s: %s; cannot repair it: %v\n", path, what, err)
		return
	}
	f.Repaired++
	fmt.Fprintf(f.Out, "%s: %s; repaired\n", path, what)
}

// Unrepairable reports a problem of path that no repair mends; todo says
// what to do.
func (f *Findings) Unrepairable(path, what, todo string) {
	f.Problems++
	fmt.Fprintf(f.Out, "%s: %s; %s\n", path, what, todo)
}
