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

// Process reports the process's CPU time, resident memory and Go heap:
// cpu_user, cpu_system (seconds, counters), rss, vsz (bytes), heap and
// goroutines. On systems without /proc only the Go runtime figures appear.
type Process struct{}

// Report implements Source.
func (Process) Report(f *Fields) {
	if user, sys, ok := readCPU(); ok {
		f.Counter("cpu_user", "process_cpu_user_seconds_total", "User CPU time of the node process.", user)
		f.Counter("cpu_system", "process_cpu_system_seconds_total", "System CPU time of the node process.", sys)
		f.Counter("cpu_total", "process_cpu_seconds_total_all", "User plus system CPU time of the node process.", user+sys)
	}
	if vsz, rss, ok := readMem(); ok {
		f.Gauge("vsz", "process_virtual_bytes", "Virtual memory size of the node process.", vsz)
		f.Gauge("rss", "process_resident_bytes", "Resident memory of the node process.", rss)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	f.Gauge("go_heap_inuse", "go_heap_inuse_bytes", "Go heap in use.", float64(ms.HeapInuse))
	f.Gauge("goroutines", "goroutines", "Goroutines.", float64(runtime.NumGoroutine()))
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
		f.Gauge("uptime", "uptime_seconds", "Seconds since the node started.", time.Since(start).Seconds())
	})
}
