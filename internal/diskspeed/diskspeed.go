// Package diskspeed measures a disk's own sequential write and read
// speed with dd and O_DIRECT, so that benchmarks of the disk engines can
// report their throughput side by side with what the disk does in the same
// run.
package diskspeed

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
)

// ErrNoDD is returned when dd is not installed.
var ErrNoDD = errors.New("diskspeed: dd not found")

var ddRate = regexp.MustCompile(`(\d+) bytes .* copied, ([0-9.]+) s`)

// Write runs `dd if=/dev/zero of=DIR/dd.out bs=1M count=MB oflag=direct`
// and returns the rate in MB/s (10^6 bytes). The file is removed.
func Write(dir string, mb int) (float64, error) {
	f := filepath.Join(dir, "dd.out")
	defer os.Remove(f)
	return dd("if=/dev/zero", "of="+f, "bs=1M", fmt.Sprint("count=", mb), "oflag=direct")
}

// WriteRead writes mb MiB as Write does, then reads the file back with
// `dd ... iflag=direct`, and returns both rates in MB/s.
func WriteRead(dir string, mb int) (write, read float64, err error) {
	f := filepath.Join(dir, "dd.out")
	defer os.Remove(f)
	if write, err = dd("if=/dev/zero", "of="+f, "bs=1M", fmt.Sprint("count=", mb), "oflag=direct"); err != nil {
		return 0, 0, err
	}
	read, err = dd("if="+f, "of=/dev/null", "bs=1M", "iflag=direct")
	return write, read, err
}

func dd(args ...string) (float64, error) {
	if _, err := exec.LookPath("dd"); err != nil {
		return 0, ErrNoDD
	}
	out, err := exec.Command("dd", args...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("dd %v: %w\n%s", args, err, out)
	}
	m := ddRate.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("cannot parse dd output %q", out)
	}
	n, _ := strconv.ParseFloat(string(m[1]), 64)
	s, _ := strconv.ParseFloat(string(m[2]), 64)
	if s <= 0 {
		return 0, fmt.Errorf("dd reported %v s", s)
	}
	return n / s / 1e6, nil
}
