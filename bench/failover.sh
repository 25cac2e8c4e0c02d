#!/usr/bin/env bash
# failover.sh - the automatic failover figures of docs/performance.md
# ("Automatic failover"), on this machine: TRIALS kill -9 trials, each on a
# fresh cluster of three shoald processes on 127.0.0.1 (--auto-failover
# --failover-timeout 1s, one replica), each killing a member that is not
# the metadata leader while a writer writes to one of its vBuckets through
# the routing client. Printed: per trial, the time from the kill to the
# leader's decision, to the committed map and to the first successful
# write; then min / p50 / p99 / max of each (the table rows of the doc).
# It prints the load average before and after. Nothing is written to the
# docs: copy the table rows.
#
# Usage:  bench/failover.sh
# Env:    TRIALS (20)
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS=${TRIALS:-20}
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
go test ./internal/e2e -count=1 -run '^TestAutoFailoverFigures$' -failover-trials "$TRIALS" -v -timeout 30m 2>&1 |
	grep -E 'trial [0-9]+:|^\s+autofailover_test.go:[0-9]+: \||^(ok|FAIL|---)' | sed 's/^ *autofailover_test.go:[0-9]*: //'
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
