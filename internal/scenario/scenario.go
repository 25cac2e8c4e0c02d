// Package scenario runs the scripted scenario files with which the pure
// decision packages are tested (internal/liveness, internal/discovery,
// internal/failover): a file is a list of commands, one a line (blank
// lines and lines starting with # are passed over); a command that
// prints is followed by a line "----" and the output it must print, up to
// a blank line. With -rewrite the files are rewritten with the output
// the commands print now. Only tests import it.
package scenario

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of the scenario files")

// Script runs one command of a file (its words) and returns what it
// prints ("" for nothing). An error stops the file.
type Script func(cmd []string) (string, error)

// RunFiles runs every file matching pattern (e.g. "testdata/*.txt") as a
// subtest named after the file, each with a fresh script from newScript.
func RunFiles(t *testing.T, pattern string, newScript func() Script) {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenario files: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) { RunFile(t, file, newScript()) })
	}
}

// RunFile runs the commands of file with run and compares what each
// prints with the block that follows it; a command that prints nothing
// has no block. With -rewrite the file is rewritten when it differs.
func RunFile(t *testing.T, file string, run Script) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	var (
		out    strings.Builder // the file as it should be
		failed bool
	)
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		out.WriteString(line + "\n")
		cmd := strings.Fields(line)
		if len(cmd) == 0 || strings.HasPrefix(cmd[0], "#") {
			continue
		}
		lineNo := i + 1
		got, err := run(cmd)
		if err != nil {
			t.Fatalf("%s:%d: %v", file, lineNo, err)
		}
		var want []string
		block := i+1 < len(lines) && lines[i+1] == "----"
		if block {
			i += 2
			for ; i < len(lines) && lines[i] != ""; i++ {
				want = append(want, lines[i])
			}
		}
		if got == "" {
			if block {
				failed = true
				if !*rewrite {
					t.Errorf("%s:%d: %s\ngot nothing, want:\n%s", file, lineNo, line, strings.Join(want, "\n"))
				}
				if i < len(lines) {
					out.WriteString("\n") // the blank line that ended the block
				}
			}
			continue
		}
		out.WriteString("----\n" + got + "\n")
		if block && i < len(lines) {
			out.WriteString("\n") // the blank line that ended the block
		}
		if w := strings.Join(want, "\n"); w != got {
			failed = true
			if !*rewrite {
				t.Errorf("%s:%d: %s\ngot:\n%s\nwant:\n%s", file, lineNo, line, got, w)
			}
		}
	}
	switch {
	case failed && *rewrite:
		if err := os.WriteFile(file, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	case failed:
		t.Log("run with -rewrite to accept the new output")
	}
}
