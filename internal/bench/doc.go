// Package bench is the load generator behind `shoal bench`: it runs one
// workload (get, set, mix, push, pop, append, range, load) over a number of
// connections, each with a pipeline depth, against a Target (a shoal node
// through the client package, or a Redis server through a small RESP2
// client of its own), and reports ops/s and HdrHistogram latency
// percentiles.
//
// # Shapes
//
// Keys are redis-benchmark's: "key:%012d" of a number drawn uniformly from
// the key space (16 bytes), so `--keys 1000000` is `redis-benchmark -r
// 1000000`. Values are ValueSize bytes of 'x' (`-d`). The kv channel of
// shoal is Options.Channel; Redis keys stand alone. Queue, log and range
// requests go to the channel (Redis list or stream key) NAME-queue,
// NAME-log and NAME-range.
//
// # Pipelining
//
// A connection sends a batch of Pipeline requests, waits for every answer,
// and sends the next batch, as redis-benchmark -P does. On Redis the batch
// is one write of P commands and P replies read in order; on shoal it is P
// concurrent calls on one Client, which the client writes together. The
// latency of a request runs from the start of its batch to its answer.
//
// # Phases
//
// Connections are opened first, then Warmup runs unrecorded, then the
// measured phase lasts Duration or Requests requests (Load: every key once).
// A batch counts when it started in the measured phase; the elapsed time
// ends at the last measured answer.
//
// # RESP2 replies
//
// The Redis reader keeps only the type and size of each reply and skips its
// contents, with bounded lines (64 KiB), bulk strings (512 MiB), arrays
// (16 Mi elements) and nesting (8):
//
//	+OK\r\n               simple string
//	-ERR message\r\n      error
//	:42\r\n               integer
//	$5\r\nhello\r\n       bulk string ($-1\r\n: nil)
//	*2\r\n<reply><reply>  array (*-1\r\n: nil)
package bench
