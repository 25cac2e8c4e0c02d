#!/usr/bin/env bash
# cluster.sh - the figures of docs/performance.md "Cluster metadata", on
# this machine, with real shoald processes on 127.0.0.1 at the default (LAN)
# raft timeouts (500 ms heartbeat and election, 250 ms leader lease):
#   1. three cold starts (--bootstrap-expect 3) to a map committed and
#      applied on all three, min/median/max of FORMATION runs;
#   2. failover: kill -9 of the leader to a new leader, as seen by polling
#      the survivors' /status every 10 ms, min/median/max of FAILOVER runs;
#   3. one metadata commit: CHANNELS new channels created one after another
#      (a first push each) through the leader and through a follower, mean,
#      median and p99, next to pushes to an existing channel;
#   4. the disk part of a commit: BenchmarkStoreLogs of internal/raftstore
#      (one ~200-byte entry per fsynced bbolt transaction).
# It prints the load average before and after; the test stops every process
# it started (testproc kills them by PID). Nothing is written to the docs:
# copy the FIGURE lines.
#
# Usage:  bench/cluster.sh
# Env:    FORMATION (5), FAILOVER (10), CHANNELS (200), BENCH_COUNT (5).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $(uptime)"
echo "# go test ./internal/e2e -run TestClusterFigures -cluster-figures -v -count=1"
SHOAL_FIGURE_RUNS="${FORMATION:-5},${FAILOVER:-10},${CHANNELS:-200}" \
	go test ./internal/e2e -run TestClusterFigures -cluster-figures -v -count=1 -timeout 30m |
	grep -E 'FIGURE|run [0-9]+:|load average|^(--- |ok|FAIL)'
echo "# go test ./internal/raftstore -run '^\$' -bench BenchmarkStoreLogs -count ${BENCH_COUNT:-5}"
go test ./internal/raftstore -run '^$' -bench BenchmarkStoreLogs -count "${BENCH_COUNT:-5}" | grep -E '^Benchmark|^ok'
echo "# $(uptime)"
