package stats

import (
	"bytes"
	"os"
	"runtime"
	"strconv"
	"time"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/self/stat. It
// is 100 on every Linux platform Go supports.
const clockTicks = 100

// Process reports, to stats.log only, the process's CPU time, resident
// memory and Go heap: cpu_user, cpu_system, cpu_total (seconds, counters),
// rss, vsz (bytes), go_heap_inuse and goroutines. On systems without /proc
// only the Go runtime figures appear. /metrics has the same figures from
// the standard process_* and go_* collectors of client_golang.
type Process struct{}

// Report implements Source.
func (Process) Report(f *Fields) {
	if user, sys, ok := readCPU(); ok {
		f.LogCounter("cpu_user", user)
		f.LogCounter("cpu_system", sys)
		f.LogCounter("cpu_total", user+sys)
	}
	if vsz, rss, ok := readMem(); ok {
		f.LogGauge("vsz", vsz)
		f.LogGauge("rss", rss)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	f.LogGauge("go_heap_inuse", float64(ms.HeapInuse))
	f.LogGauge("goroutines", float64(runtime.NumGoroutine()))
}

// readCPU returns user and system CPU seconds from /proc/self/stat.
func readCPU() (user, sys float64, ok bool) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, 0, false
	}
	// The command name (field 2) is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	fields := bytes.Fields(b[i+1:])
	// After ")": state(3) ... utime is field 14, stime field 15 (1-based).
	if len(fields) < 13 {
		return 0, 0, false
	}
	u, err1 := strconv.ParseUint(string(fields[11]), 10, 64)
	s, err2 := strconv.ParseUint(string(fields[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return float64(u) / clockTicks, float64(s) / clockTicks, true
}

// readMem returns virtual and resident bytes from /proc/self/statm.
func readMem() (vsz, rss float64, ok bool) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, 0, false
	}
	fields := bytes.Fields(b)
	if len(fields) < 2 {
		return 0, 0, false
	}
	v, err1 := strconv.ParseUint(string(fields[0]), 10, 64)
	r, err2 := strconv.ParseUint(string(fields[1]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	page := float64(os.Getpagesize())
	return float64(v) * page, float64(r) * page, true
}

// Uptime reports the seconds since start.
func Uptime(start time.Time) Source {
	return SourceFunc(func(f *Fields) {
		f.LogGauge("uptime", time.Since(start).Seconds())
	})
}
