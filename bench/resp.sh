#!/usr/bin/env bash
# resp.sh - redis-benchmark against Redis and against shoal's RESP port, on
# this machine, in one run.
#
# Starts its own redis-server (persistence off) and shoald --resp (fresh
# temporary data directory) on free 127.0.0.1 ports, both pinned to CPU 0,
# and runs redis-benchmark pinned to CPU 1:
#   redis-benchmark -t set,get,incr,lpush,rpop,mset -c 50 -P 1|16 -d 100 -r 100000
# against each, alternating which goes first, REPS times, and takes the
# medians. Then the forwarding cost: a cluster of three shoald (all on CPU
# 0, the same CPU budget as the one node) and the same benchmark against
# one node's RESP port, where about 2/3 of the keys belong to the other
# nodes and are forwarded; the ratio is cluster / one node.
# It prints the tables and writes them, with the machine and the commands,
# into docs/performance.md between <!-- resp:begin --> and <!-- resp:end -->.
# It stops exactly the processes it started (by PID), also on error.
#
# Usage:  bench/resp.sh            (from anywhere in the repository)
# Env:    REPS (3), N1 (200000) and N16 (1000000) requests per test at -P 1
#         and -P 16, CLUSTER=0 skips the cluster, PIN=0 disables pinning,
#         DOC (docs/performance.md; DOC=- prints only).
# Needs:  go, redis-server, redis-cli, redis-benchmark (Debian: redis-server
#         redis-tools), taskset (util-linux), awk.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPS=${REPS:-3}
N1=${N1:-200000}
N16=${N16:-1000000}
CLUSTER=${CLUSTER:-1}
DOC=${DOC:-$ROOT/docs/performance.md}
TESTS=set,get,incr,lpush,rpop,mset
export PATH="$PATH:/usr/local/go/bin"

for c in go redis-server redis-cli redis-benchmark awk; do
  command -v "$c" >/dev/null || { echo "resp.sh: missing $c (apt-get install redis-server redis-tools)" >&2; exit 1; }
done
SRV_PIN=()
CLI_PIN=()
if [ "${PIN:-1}" != 0 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  SRV_PIN=(taskset -c 0)
  CLI_PIN=(taskset -c 1)
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/resp-bench.XXXXXX")
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
  echo "servers stopped; raw results in $WORK" >&2
}
trap stop_all EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
wait_port() { # port
  for _ in $(seq 200); do
    redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "resp.sh: nothing answers on port $1" >&2
  exit 1
}

echo "building shoald" >&2
(cd "$ROOT" && go build -o "$WORK/shoald" ./cmd/shoald)

RPORT=$(free_port)
"${SRV_PIN[@]}" redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
SPORT=$(free_port)
"${SRV_PIN[@]}" "$WORK/shoald" --listen "127.0.0.1:$(free_port)" --http off --data "$WORK/data" --resp "127.0.0.1:$SPORT" \
  --console=false --stats-interval 0 --queue-ring-size 2GiB >"$WORK/shoald.log" 2>&1 &
PIDS+=($!)
wait_port "$RPORT"
wait_port "$SPORT"

# bench NAME PORT P: one redis-benchmark run, rps per test appended to
# $WORK/results as "NAME P TEST RPS".
bench() {
  local name=$1 port=$2 p=$3 n=$N1
  [ "$p" = 16 ] && n=$N16
  redis-cli -p "$port" del mylist >/dev/null 2>&1 || true
  "${CLI_PIN[@]}" redis-benchmark -h 127.0.0.1 -p "$port" -t "$TESTS" -c 50 -P "$p" -d 100 -r 100000 -n "$n" --csv \
    2>/dev/null | tee -a "$WORK/raw-$name-$p.csv" |
    awk -F'"' -v name="$name" -v p="$p" '$2 != "test" && NF > 3 { t=$2; sub(/ \(.*/, "", t); print name, p, t, $4 }' >>"$WORK/results"
}

for rep in $(seq "$REPS"); do
  for p in 1 16; do
    if [ $((rep % 2)) = 1 ]; then
      bench redis "$RPORT" "$p"; bench shoal "$SPORT" "$p"
    else
      bench shoal "$SPORT" "$p"; bench redis "$RPORT" "$p"
    fi
    echo "rep $rep -P $p done" >&2
  done
done

if [ "$CLUSTER" != 0 ]; then
  # A cluster of three on CPU 0; the benchmark against node 1's port.
  JOIN=""
  CP=()
  RP=()
  for i in 1 2 3; do
    CP+=("$(free_port)")
    RP+=("$(free_port)")
  done
  JOIN="127.0.0.1:${CP[0]},127.0.0.1:${CP[1]},127.0.0.1:${CP[2]}"
  for i in 0 1 2; do
    "${SRV_PIN[@]}" "$WORK/shoald" --listen "127.0.0.1:${CP[$i]}" --http off --data "$WORK/data-c$i" --resp "127.0.0.1:${RP[$i]}" \
      --join "$JOIN" --bootstrap-expect 3 --console=false --stats-interval 0 --queue-ring-size 2GiB >"$WORK/cluster$i.log" 2>&1 &
    PIDS+=($!)
  done
  for i in 0 1 2; do wait_port "${RP[$i]}"; done
  (cd "$ROOT" && go build -o "$WORK/shoal" ./cmd/shoal)
  "$WORK/shoal" --addr "127.0.0.1:${CP[0]}" wait-ready --timeout 60s >/dev/null
  for rep in $(seq "$REPS"); do
    for p in 1 16; do
      bench cluster "${RP[0]}" "$p"
      echo "cluster rep $rep -P $p done" >&2
    done
  done
  FWD=$(redis-cli -p "${RP[0]}" info stats | awk -F: '/shoal_forwarded_commands/ { gsub(/\r/, "", $2); print $2 }')
  LISTADDR=$("$WORK/shoal" --addr "127.0.0.1:${CP[0]}" vbmap --key mylist 2>/dev/null | awk '$1 == "active" { print $3 }')
  if [ "$LISTADDR" = "127.0.0.1:${CP[0]}" ]; then
    LISTNODE="its vBucket's active is the node benchmarked: LPUSH and RPOP were not forwarded"
  else
    LISTNODE="its vBucket's active is another node: every LPUSH and RPOP was forwarded"
  fi
fi

median() { sort -g | awk '{ a[NR]=$1 } END { if (NR) print a[int((NR+1)/2)]; else print "-" }'; }
get() { # name p test
  awk -v n="$1" -v p="$2" -v t="$3" '$1==n && $2==p && $3==t { print $4 }' "$WORK/results" | median
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a != "-") printf "%.2f", a/b; else print "-" }'; }
k() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else printf "%.0fk", v/1000 }'; }

TABLE=$WORK/table.md
{
  echo "| test | -P | Redis req/s | shoal req/s | shoal/Redis |"
  echo "|---|---|---|---|---|"
  for p in 1 16; do
    for t in SET GET INCR LPUSH RPOP MSET; do
      r=$(get redis "$p" "$t"); s=$(get shoal "$p" "$t")
      echo "| $t | $p | $(k "$r") | $(k "$s") | $(ratio "$s" "$r") |"
    done
  done
  if [ "$CLUSTER" != 0 ]; then
    echo
    echo "Forwarding: the same benchmark against one node of a three-node cluster"
    echo "(all three on CPU 0), against one node alone:"
    echo
    echo "| test | -P | one node req/s | 3-node cluster, one node's port, req/s | cluster/one node |"
    echo "|---|---|---|---|---|"
    for p in 1 16; do
      for t in SET GET INCR LPUSH RPOP MSET; do
        s=$(get shoal "$p" "$t"); c=$(get cluster "$p" "$t")
        echo "| $t | $p | $(k "$s") | $(k "$c") | $(ratio "$c" "$s") |"
      done
    done
    echo
    echo "Commands (or per-node parts of MSET) forwarded by the node benchmarked: $FWD."
    echo "The list of LPUSH/RPOP is one key, \`mylist\`: $LISTNODE"
  fi
} >"$TABLE"
cat "$TABLE"

if [ "$DOC" != - ]; then
  CPU=$(awk -F: '/model name/ { gsub(/^ /, "", $2); print $2; exit }' /proc/cpuinfo)
  {
    echo "<!-- resp:begin -->"
    echo "## RESP: redis-benchmark against Redis and shoal (generated by bench/resp.sh, $(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo "Machine: $(nproc) CPUs ($CPU), $(redis-server --version | awk '{print $1, $3}'), $(go version | awk '{print $3}')."
    echo "Each server pinned to CPU 0 (\`taskset -c 0\`), redis-benchmark to CPU 1; Redis with"
    echo "\`--save '' --appendonly no\`; shoald \`--resp\` on a fresh data directory, \`--queue-ring-size 2GiB\`."
    echo "Each figure is the median of $REPS runs, Redis and shoal alternating which goes first;"
    echo "the machine is shared with other engineers' tests, so single runs vary (raw CSVs in the script's"
    echo "output directory). Command, per -P (-n $N1 at -P 1, $N16 at -P 16):"
    echo
    echo "    redis-benchmark -t $TESTS -c 50 -P 1|16 -d 100 -r 100000 -n N --csv"
    echo
    cat "$TABLE"
    echo "<!-- resp:end -->"
  } >"$WORK/section.md"
  if grep -q '<!-- resp:begin -->' "$DOC"; then
    awk -v f="$WORK/section.md" '
      /<!-- resp:begin -->/ { while ((getline l < f) > 0) print l; skip=1; next }
      /<!-- resp:end -->/ { skip=0; next }
      !skip { print }' "$DOC" >"$WORK/doc.md"
    cp "$WORK/doc.md" "$DOC"
  else
    { echo; cat "$WORK/section.md"; } >>"$DOC"
  fi
  echo "written to $DOC" >&2
fi
