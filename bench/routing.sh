#!/usr/bin/env bash
# routing.sh - the figures of docs/performance.md "Routing", on this machine:
#   1. one node's throughput through the routing client and through
#      client.WithNoRouting, alternating, in one run of the test binary
#      each round (BenchmarkRouting of client/: Get and Put from 16
#      goroutines on one connection, and Pipelines of 100 Gets);
#   2. `shoal bench` GET and SET (50 conns x pipeline 1 and 16, 100-byte
#      values over KEYS keys) against one shoald and against a cluster of
#      three shoald processes (--bootstrap-expect 3, the default 1024
#      vBuckets and one replica) through the routing client, whose --addr
#      names one seed; one node and three alternating, REPS times; with
#      each node's ops/s and CPU per request as shoal bench reports them.
# It prints the load average before and after, and every raw line; it
# stops exactly the processes it started (by PID), also on error or
# Ctrl-C. Nothing is written to the docs: copy the FIGURE lines.
#
# Usage:  bench/routing.sh
# Env:    ROUNDS (5) of the benchmark, BENCHTIME (1s), REPS (2) of shoal
#         bench, DURATION (8s), WARMUP (1s), KEYS (100000).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-5}
BENCHTIME=${BENCHTIME:-1s}
REPS=${REPS:-2}
DURATION=${DURATION:-8s}
WARMUP=${WARMUP:-1s}
KEYS=${KEYS:-100000}
HOST=127.0.0.1
export PATH="$PATH:/usr/local/go/bin"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/routing.XXXXXX")
PIDS=()
stop_all() {
  local p
  for p in "${PIDS[@]}"; do
    if kill -0 "$p" 2>/dev/null; then
      kill "$p"
      wait "$p" 2>/dev/null || true
    fi
  done
  rm -rf "$WORK"/data*
  echo "# servers stopped; logs in $WORK" >&2
}
trap stop_all EXIT
trap 'exit 130' INT TERM

echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(go version | awk '{print $3}')"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "# 1. go test ./client -run '^\$' -bench BenchmarkRouting -benchtime $BENCHTIME, $ROUNDS rounds (routed and direct in each)"
(cd "$ROOT" && go test -c -o "$WORK/client.test" ./client)
for _ in $(seq 1 "$ROUNDS"); do
  "$WORK/client.test" -test.run '^$' -test.bench BenchmarkRouting -test.benchtime "$BENCHTIME" 2>/dev/null | grep '^Benchmark'
done | tee "$WORK/bench.txt"
awk '/^Benchmark/ { n = $1; sub(/-[0-9]+$/, "", n); s[n] += $3; c[n]++ }
  END { for (n in s) printf "FIGURE %s mean %.0f ns/op over %d rounds\n", n, s[n] / c[n], c[n] }' "$WORK/bench.txt" | sort

echo "# 2. shoal bench, one node and three, $REPS reps"
(cd "$ROOT" && go build -o "$WORK/bin/" ./cmd/shoal ./cmd/shoald)
SHOAL=$WORK/bin/shoal
EPHEMERAL_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
USED=()
free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
    case " ${USED[*]} " in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/$HOST/$p") 2>/dev/null; then
      USED+=("$p")
      echo "$p"
      return
    fi
  done
  echo "routing.sh: no free port found" >&2
  return 1
}
start_node() { # name listen [cluster flags...]
  local name=$1 listen=$2
  shift 2
  "$WORK/bin/shoald" --listen "$listen" --http off --data "$WORK/data-$name" --console=false --stats-interval 0 "$@" \
    >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
}
wait_cluster() { # addr members
  for _ in $(seq 1 150); do
    if "$SHOAL" --addr "$1" --timeout 1s cluster --json 2>/dev/null | grep -q "\"revision\": [1-9]" &&
      [ "$("$SHOAL" --addr "$1" --timeout 1s nodes 2>/dev/null | grep -c ' active ')" = "$2" ]; then
      return
    fi
    sleep 0.2
  done
  echo "routing.sh: no cluster at $1; see $WORK/*.log" >&2
  exit 1
}
P1=$(free_port)
start_node one "$HOST:$P1"
ONE_PIDS="${PIDS[*]}"
A=$(free_port); B=$(free_port); C=$(free_port)
JOIN="$HOST:$A,$HOST:$B,$HOST:$C"
for p in "$A" "$B" "$C"; do
  start_node "c$p" "$HOST:$p" --join "$JOIN" --bootstrap-expect 3
done
THREE_PIDS="${PIDS[*]:1}"
TICK=$(getconf CLK_TCK)
cpu_ticks() { # pids: user+system CPU ticks of the processes
  local t=0 p f
  for p in "$@"; do
    read -r -a f <"/proc/$p/stat"
    t=$((t + f[13] + f[14]))
  done
  echo "$t"
}
wait_cluster "$HOST:$P1" 1
wait_cluster "$HOST:$A" 3
for addr in "$HOST:$P1" "$HOST:$A"; do
  "$SHOAL" --addr "$addr" bench --workload load --keys "$KEYS" --value-size 100 --conns 4 --pipeline 64 --quiet >/dev/null
done
run() { # label addr workload conns pipeline
  local out pids before after cli
  if [ "$1" = one-node ]; then pids=$ONE_PIDS; else pids=$THREE_PIDS; fi
  # shellcheck disable=SC2086
  before=$(cpu_ticks $pids)
  out=$(/usr/bin/time -f "TIME %U %S" -o "$WORK/time.txt" "$SHOAL" --addr "$2" bench --workload "$3" --conns "$4" --pipeline "$5" \
    --keys "$KEYS" --value-size 100 --duration "$DURATION" --warmup "$WARMUP" --json --quiet)
  # shellcheck disable=SC2086
  after=$(cpu_ticks $pids)
  cli=$(awk '/^TIME/ { print $2 + $3 }' "$WORK/time.txt")
  echo "$out" | awk -v l="$1 $3 $4x$5" -v srv="$(((after - before)))" -v tick="$TICK" -v cli="$cli" '{
    match($0, /"ops_per_sec":[0-9.]+/); ops = substr($0, RSTART + 14, RLENGTH - 14)
    match($0, /"p99_ms":[0-9.]+/); p99 = substr($0, RSTART + 9, RLENGTH - 9)
    match($0, /"errors":[0-9]+/); e = substr($0, RSTART + 9, RLENGTH - 9)
    match($0, /"requests":[0-9]+/); n = substr($0, RSTART + 11, RLENGTH - 11)
    match($0, /"warmup_requests":[0-9]+/); w = substr($0, RSTART + 18, RLENGTH - 18)
    printf "RUN %s: %.0f ops/s, p99 %s ms, %s errors, nodes %.2f us CPU/request, client %.2f us CPU/request\n", l, ops, p99, e, srv / tick * 1e6 / (n + w), cli * 1e6 / (n + w) }'
  # Each node's share, as shoal bench reports it (requests it answered in
  # the measured time, its CPU per request).
  echo "$out" | grep -o '{"addr":[^}]*}' | sed 's/[{}"]//g; s/,/ /g' | awk -v l="$1 $3 $4x$5" '{
    for (i = 1; i <= NF; i++) { split($i, kv, ":"); if (kv[1] == "addr") a = kv[2] ":" kv[3]; else v[kv[1]] = kv[2] }
    printf "NODE %s %s: %.0f ops/s, %.2f us CPU/request\n", l, a, v["ops_per_sec"], v["cpu_us_per_request"] }'
}
for rep in $(seq 1 "$REPS"); do
  for w in get set; do
    for cp in "50 1" "50 16"; do
      set -- $cp
      if [ $((rep % 2)) = 1 ]; then
        run "one-node" "$HOST:$P1" "$w" "$1" "$2"
        run "three-nodes" "$HOST:$A" "$w" "$1" "$2"
      else
        run "three-nodes" "$HOST:$A" "$w" "$1" "$2"
        run "one-node" "$HOST:$P1" "$w" "$1" "$2"
      fi
    done
  done
done | tee "$WORK/runs.txt"
awk '/^RUN/ { k = $2 " " $3 " " $4; sub(/:$/, "", k); s[k] += $5; c[k]++; sc[k] += $13; cc[k] += $17 }
  END { for (k in s) printf "FIGURE %s mean %.0f ops/s over %d runs; nodes %.2f, client %.2f us CPU/request\n", k, s[k] / c[k], c[k], sc[k] / c[k], cc[k] / c[k] }' "$WORK/runs.txt" | sort
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
