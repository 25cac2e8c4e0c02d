package stats

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"
)

// LogWriter writes stats.log lines: a timestamp, then `key:value` pairs
// separated by spaces. Counters are printed as the change since the
// previous line, so each line says what happened in its interval.
type LogWriter struct {
	w    io.Writer
	prev map[string]float64
}

// NewLogWriter returns a writer of stats.log lines to w.
func NewLogWriter(w io.Writer) *LogWriter {
	return &LogWriter{w: w, prev: map[string]float64{}}
}

// SetOutput changes where lines go (stats.log is reopened for every line,
// so that it can be rotated by moving it).
func (l *LogWriter) SetOutput(w io.Writer) { l.w = w }

// Write writes one line for fields at time now.
func (l *LogWriter) Write(now time.Time, fields []Field) error {
	SortFields(fields)
	bw := bufio.NewWriter(l.w)
	bw.WriteString(now.Format("2006-01-02 15:04:05,000"))
	seen := make(map[string]bool, len(fields))
	for _, f := range fields {
		if f.Key == "" || f.Hist != nil {
			continue // Prometheus only
		}
		v := f.Value
		if f.Counter {
			prev, ok := l.prev[f.Key]
			l.prev[f.Key] = f.Value
			if ok && f.Value >= prev {
				v = f.Value - prev
			}
		}
		seen[f.Key] = true
		bw.WriteByte(' ')
		bw.WriteString(f.Key)
		bw.WriteByte(':')
		bw.WriteString(formatValue(v))
	}
	for k := range l.prev {
		if !seen[k] {
			delete(l.prev, k)
		}
	}
	bw.WriteByte('\n')
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("cannot write stats line: %w", err)
	}
	return nil
}

func formatValue(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}
