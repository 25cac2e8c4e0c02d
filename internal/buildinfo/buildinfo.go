// Package buildinfo says what a binary is: the version it was given at
// build time, the VCS commit Go stamped into it and the Go version that
// built it, for `shoal version` and `shoald --version`.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Info is what a binary says about itself.
type Info struct {
	Version string `json:"version"`
	Commit  string `json:"commit"` // "unknown" when Go stamped none (go run, go test); "+dirty" for a modified tree
	Go      string `json:"go"`
}

// Read returns the Info of this binary, whose version (from -ldflags "-X
// main.version=...") is version.
func Read(version string) Info {
	in := Info{Version: version, Commit: "unknown", Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return in
	}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			if s.Value != "" {
				in.Commit = s.Value
			}
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && in.Commit != "unknown" {
		in.Commit += "+dirty"
	}
	return in
}

// String is the one-line form: NAME VERSION (commit C, GO).
func (in Info) String(name string) string {
	return fmt.Sprintf("%s %s (commit %s, %s)", name, in.Version, in.Commit, in.Go)
}
