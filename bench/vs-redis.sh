#!/usr/bin/env bash
# vs-redis.sh - shoal against Redis on this machine, in one run, with one tool.
#
# Starts its own redis-server (persistence off) and shoald (fresh temporary
# data directory) on free 127.0.0.1 ports, then:
#   1. memory per key: loads N_KEYS keys (key:%012d, 16 bytes) with 100-byte
#      values into each with `shoal bench --workload load`; Redis: used_memory
#      delta; shoal: the node's resident memory (VmRSS) delta;
#   2. throughput and latency with `shoal bench` for both targets, alternating
#      Redis and shoal (and which goes first) REPS times:
#        GET and SET at 50 conns x pipeline 1 and 16, and 1 conn x pipeline 1;
#        push/pop (LPUSH/RPOP) at 50 x 1 and 50 x 16 once shoal's queue client
#        exists (skipped with a note until then);
#   3. tool check (when redis-benchmark is installed and CHECK is not 0):
#      redis-benchmark and `shoal bench --target redis://...` alternately
#      against the same Redis, SET/GET at 50 x 1 and 50 x 16, REPS times, to
#      show that the tool loads Redis as redis-benchmark does;
#   4. prints the medians and the ratio shoal/Redis, and writes them with the
#      machine and the commands into docs/performance.md between the markers
#      <!-- vs-redis:begin --> and <!-- vs-redis:end -->.
# It stops exactly the processes it started (by PID), also on error or Ctrl-C.
#
# Usage:  bench/vs-redis.sh            (from anywhere in the repository)
# Env:    REPS (3), DURATION (10s), WARMUP (1s) of every run, N_KEYS (1000000),
#         PIN=0 disables CPU pinning (default with >= 2 CPUs: both servers on
#         CPU 0, the load generator on CPU 1, as in the Redis anchors),
#         DOC (docs/performance.md; DOC=- prints only), CHECK=0 skips the tool
#         check, N_CHECK1 / N_CHECK16 (200000 / 1000000) requests per check run,
#         QUEUE_RING (2GiB) the ring size given to shoald.
# Needs:  go (builds shoal and shoald), redis-server and redis-cli (Debian:
#         redis-server redis-tools), awk; taskset (util-linux) for pinning;
#         redis-benchmark (redis-tools) for the tool check.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPS=${REPS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
N_KEYS=${N_KEYS:-1000000}
CHECK=${CHECK:-1}
N_CHECK1=${N_CHECK1:-200000}
N_CHECK16=${N_CHECK16:-1000000}
DOC=${DOC:-$ROOT/docs/performance.md}
HOST=127.0.0.1

export PATH="$PATH:/usr/local/go/bin"
missing=()
for c in go redis-server redis-cli awk; do
  command -v "$c" >/dev/null || missing+=("$c")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "vs-redis.sh: missing: ${missing[*]}" >&2
  echo "  redis-server, redis-cli: apt-get install redis-server redis-tools; go: Go 1.26 from https://go.dev/dl/" >&2
  exit 1
fi
SRV_PIN=()
CLI_PIN=()
if [ "${PIN:-1}" != 0 ] && [ "$(nproc)" -ge 2 ]; then
  if command -v taskset >/dev/null; then
    SRV_PIN=(taskset -c 0)
    CLI_PIN=(taskset -c 1)
  else
    echo "vs-redis.sh: taskset not found (util-linux): running unpinned" >&2
  fi
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vs-redis.XXXXXX")
RPID=
SPID=
stop_all() {
  local p
  for p in $RPID $SPID; do
    if kill -0 "$p" 2>/dev/null; then
      kill "$p"
      wait "$p" 2>/dev/null || true
    fi
  done
  rm -rf "$WORK/data"
  echo "servers stopped; logs and raw results in $WORK" >&2
}
trap stop_all EXIT
trap 'exit 130' INT TERM

echo "building shoal and shoald into $WORK/bin" >&2
(cd "$ROOT" && go build -o "$WORK/bin/" ./cmd/shoal ./cmd/shoald)
SHOAL=$WORK/bin/shoal

# free_port prints a port below the ephemeral range (which outgoing
# connections use) that nothing listens on (bash's /dev/tcp connects) and
# that is not among its arguments.
EPHEMERAL_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
    case " $* " in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/$HOST/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  echo "vs-redis.sh: no free port found" >&2
  return 1
}
RPORT=$(free_port)
SPORT=$(free_port "$RPORT")
HPORT=$(free_port "$RPORT" "$SPORT")

# taskset execs its command, so $! is the server's own PID.
"${SRV_PIN[@]}" redis-server --bind "$HOST" --port "$RPORT" --save "" --appendonly no \
  --daemonize no --logfile "" >"$WORK/redis.log" 2>&1 &
RPID=$!
# The queue rows push for DURATION before they pop: at pipeline 16 that is
# millions of records. Redis holds them in memory; shoald gets a ring big
# enough to do the same (with the default 64 MiB ring the rest overflows to
# disk, which docs/performance.md "Queue" measures on its own).
"${SRV_PIN[@]}" "$WORK/bin/shoald" --listen "$HOST:$SPORT" --http "$HOST:$HPORT" \
  --data "$WORK/data" --console=false --stats-interval 0 --queue-ring-size "${QUEUE_RING:-2GiB}" >"$WORK/shoald.log" 2>&1 &
SPID=$!

rcli() { redis-cli -h "$HOST" -p "$RPORT" "$@"; }
for i in $(seq 1 50); do
  if rcli ping >/dev/null 2>&1 && "$SHOAL" --addr "$HOST:$SPORT" --timeout 1s channels >/dev/null 2>&1; then
    break
  fi
  if [ "$i" = 50 ]; then
    echo "vs-redis.sh: the servers did not come up; see $WORK/*.log" >&2
    exit 1
  fi
  sleep 0.2
done
REDIS_VERSION=$(redis-server --version | awk '{print $3}' | sed 's/^v=//')
echo "redis $REDIS_VERSION pid $RPID on $HOST:$RPORT, shoald pid $SPID on $HOST:$SPORT" >&2
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# target_args NAME prints the shoal bench arguments of target NAME.
target_args() {
  if [ "$1" = redis ]; then echo "--target redis://$HOST:$RPORT"; else echo "--addr $HOST:$SPORT"; fi
}
# json_field FIELD reads one number of the JSON object on stdin.
json_field() { sed -n "s/.*\"$1\":\\([-0-9.e+]*\\).*/\\1/p"; }
# bench NAME ARGS... runs shoal bench against target NAME; prints its JSON.
bench() {
  local name=$1
  shift
  # shellcheck disable=SC2046
  "${CLI_PIN[@]}" "$SHOAL" bench $(target_args "$name") --json --quiet "$@"
}

# --- 1. memory per key -------------------------------------------------------
rss_bytes() { awk '/^VmRSS:/{print $2 * 1024}' "/proc/$SPID/status"; }
used_memory() { rcli info memory | tr -d '\r' | awk -F: '$1=="used_memory"{print $2}'; }
LOAD_ARGS=(--workload load --keys "$N_KEYS" --value-size 100 --conns 4 --pipeline 64)
echo "loading $N_KEYS keys into each" >&2
R0=$(used_memory)
bench redis "${LOAD_ARGS[@]}" >"$WORK/load-redis.json"
sleep 1
R1=$(used_memory)
S0=$(rss_bytes)
bench shoal "${LOAD_ARGS[@]}" >"$WORK/load-shoal.json"
sleep 1
S1=$(rss_bytes)
RKEYS=$(rcli dbsize | tr -d '\r')
MEM_REDIS=$(awk -v a="$R0" -v b="$R1" -v n="$RKEYS" 'BEGIN{printf "%.1f", (b-a)/n}')
MEM_SHOAL=$(awk -v a="$S0" -v b="$S1" -v n="$N_KEYS" 'BEGIN{printf "%.1f", (b-a)/n}')

# --- 2. throughput -----------------------------------------------------------
# config lines: label workload conns pipeline
CONFIGS=(
  "GET get 50 1" "SET set 50 1" "GET get 50 16" "SET set 50 16" "GET get 1 1" "SET set 1 1"
)
QUEUE_NOTE=
if bench shoal --workload push --requests 1 --warmup 0 >/dev/null 2>"$WORK/queue-probe.err"; then
  CONFIGS+=("push push 50 1" "pop pop 50 1" "push push 50 16" "pop pop 50 16")
else
  QUEUE_NOTE="push/pop skipped: $(tail -1 "$WORK/queue-probe.err" | sed 's/^shoal: //')"
  echo "$QUEUE_NOTE" >&2
fi
# cpu_ticks PID prints the user+system CPU time of process PID, in clock ticks.
cpu_ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
RAW=$WORK/raw.csv
echo "target,label,conns,pipeline,rep,ops_per_sec,p50_ms,p99_ms,errors,cpu_us_per_req" >"$RAW"
for rep in $(seq 1 "$REPS"); do
  order="redis shoal"
  if [ $((rep % 2)) = 0 ]; then order="shoal redis"; fi
  for cfg in "${CONFIGS[@]}"; do
    read -r label workload conns pipeline <<<"$cfg"
    for t in $order; do
      pid=$RPID
      if [ "$t" = shoal ]; then pid=$SPID; fi
      c0=$(cpu_ticks "$pid")
      # The push rows leave their records for the pop rows (a queue run
      # removes its channel at the end by default).
      j=$(bench "$t" --workload "$workload" --conns "$conns" --pipeline "$pipeline" --keys "$N_KEYS" \
        --value-size 100 --duration "$DURATION" --warmup "$WARMUP" --cleanup=false) || j='{}'
      c1=$(cpu_ticks "$pid")
      row="$t,$label,$conns,$pipeline,$rep"
      for f in ops_per_sec p50_ms p99_ms errors; do row="$row,$(echo "$j" | json_field $f)"; done
      n=$(($(echo "$j" | json_field requests) + $(echo "$j" | json_field warmup_requests)))
      row="$row,$(awk -v c=$((c1 - c0)) -v hz="$HZ" -v n="$n" 'BEGIN{if (n > 0) printf "%.2f", c / hz * 1e6 / n}')"
      echo "$row" >>"$RAW"
      echo "rep $rep $label ${conns}x$pipeline $t: $(echo "$j" | json_field ops_per_sec) ops/s" >&2
    done
  done
done

# --- 3. tool check -----------------------------------------------------------
CHECK_RAW=$WORK/check.csv
CHECK_NOTE=
if [ "$CHECK" = 0 ]; then
  CHECK_NOTE="Tool check skipped (CHECK=0)."
elif ! command -v redis-benchmark >/dev/null; then
  CHECK_NOTE="Tool check skipped: redis-benchmark is not installed (Debian: redis-tools)."
else
  echo "tool,label,conns,pipeline,rep,ops_per_sec,cpu_us_per_req" >"$CHECK_RAW"
  for rep in $(seq 1 "$REPS"); do
    order="redis-benchmark shoal-bench"
    if [ $((rep % 2)) = 0 ]; then order="shoal-bench redis-benchmark"; fi
    for cfg in "GET get 50 1 $N_CHECK1" "SET set 50 1 $N_CHECK1" "GET get 50 16 $N_CHECK16" "SET set 50 16 $N_CHECK16"; do
      read -r label workload conns pipeline n <<<"$cfg"
      for tool in $order; do
        c0=$(cpu_ticks "$RPID")
        if [ "$tool" = redis-benchmark ]; then
          ops=$("${CLI_PIN[@]}" redis-benchmark -h "$HOST" -p "$RPORT" --csv -t "$workload" -n "$n" -c "$conns" \
            -P "$pipeline" -r "$N_KEYS" -d 100 | tr -d '"' | awk -F, 'NR==2{print $2}')
        else
          ops=$(bench redis --workload "$workload" --requests "$n" --warmup 0 --conns "$conns" --pipeline "$pipeline" \
            --keys "$N_KEYS" --value-size 100 | json_field ops_per_sec) || ops=
        fi
        c1=$(cpu_ticks "$RPID")
        echo "$tool,$label,$conns,$pipeline,$rep,$ops,$(awk -v c=$((c1 - c0)) -v hz="$HZ" -v n="$n" 'BEGIN{printf "%.2f", c / hz * 1e6 / n}')" >>"$CHECK_RAW"
        echo "check rep $rep $label ${conns}x$pipeline $tool: $ops ops/s" >&2
      done
    done
  done
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 4. medians, table, doc --------------------------------------------------
median() { sort -g | awk '{a[NR]=$1} END{if (NR==0) print ""; else if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
col() { awk -F, -v t="$1" -v l="$2" -v c="$3" -v p="$4" -v k="$5" '$1==t && $2==l && $3==c && $4==p && $k!="" {print $k}' "$RAW" | median; }
fmt_int() { awk -v x="$1" 'BEGIN{ if (x=="") {print "n/a"; exit} s=sprintf("%d", x+0.5); o=""; while (length(s)>3) {o="," substr(s,length(s)-2) o; s=substr(s,1,length(s)-3)} print s o}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a=="" || b=="" || b==0) print "n/a"; else printf "%.2f", a/b}'; }

TABLE=$WORK/table.md
{
  echo "| workload | conns x pipeline | Redis ops/s | shoal ops/s | **shoal/Redis** | Redis p50 / p99 ms | shoal p50 / p99 ms | server CPU µs/request Redis / shoal |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for cfg in "${CONFIGS[@]}"; do
    read -r label workload conns pipeline <<<"$cfg"
    ro=$(col redis "$label" "$conns" "$pipeline" 6)
    so=$(col shoal "$label" "$conns" "$pipeline" 6)
    echo "| $label | $conns x $pipeline | $(fmt_int "$ro") | $(fmt_int "$so") | **$(ratio "$so" "$ro")** |" \
      "$(col redis "$label" "$conns" "$pipeline" 7) / $(col redis "$label" "$conns" "$pipeline" 8) |" \
      "$(col shoal "$label" "$conns" "$pipeline" 7) / $(col shoal "$label" "$conns" "$pipeline" 8) |" \
      "$(col redis "$label" "$conns" "$pipeline" 10) / $(col shoal "$label" "$conns" "$pipeline" 10) |"
  done
  echo "| memory per key ($(fmt_int "$N_KEYS") keys, 16 B key, 100 B value) | | $MEM_REDIS B | $MEM_SHOAL B | **$(ratio "$MEM_SHOAL" "$MEM_REDIS")** | used_memory delta | RSS delta | |"
} >"$TABLE"
CHECK_TABLE=$WORK/check-table.md
if [ -z "$CHECK_NOTE" ]; then
  ccol() { awk -F, -v t="$1" -v l="$2" -v p="$3" -v k="$4" '$1==t && $2==l && $4==p && $k!="" {print $k}' "$CHECK_RAW" | median; }
  {
    echo "| request | conns x pipeline | redis-benchmark ops/s | shoal bench ops/s | shoal bench / redis-benchmark | Redis CPU µs/request under redis-benchmark / shoal bench |"
    echo "|---|---:|---:|---:|---:|---:|"
    for cfg in "GET 1" "SET 1" "GET 16" "SET 16"; do
      read -r label pipeline <<<"$cfg"
      rb=$(ccol redis-benchmark "$label" "$pipeline" 6)
      sb=$(ccol shoal-bench "$label" "$pipeline" 6)
      echo "| $label | 50 x $pipeline | $(fmt_int "$rb") | $(fmt_int "$sb") | $(ratio "$sb" "$rb") |" \
        "$(ccol redis-benchmark "$label" "$pipeline" 7) / $(ccol shoal-bench "$label" "$pipeline" 7) |"
    done
  } >"$CHECK_TABLE"
fi
ERRS=$(awk -F, 'NR>1 && $9!="" {s+=$9} END{print s+0}' "$RAW")
CPU=$(awk -F': *' '/^model name/{print $2; exit}' /proc/cpuinfo)

SECTION=$WORK/section.md
{
  echo "<!-- vs-redis:begin -->"
  echo "## shoal vs Redis (generated by bench/vs-redis.sh, $(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "Medians of $REPS runs per row, each $DURATION after a $WARMUP warmup, Redis and shoal alternating."
  echo "Keys key:%012d over $(fmt_int "$N_KEYS") keys (all loaded first, so every GET hits), 100-byte values."
  echo "Latencies are per request, from the start of its pipelined batch to its answer."
  echo "Server CPU per request is the server process's user+system CPU time over the run (/proc/PID/stat)"
  echo "divided by the requests answered, warmup included: it does not depend on how much CPU other work leaves."
  echo "The ops/s columns do: when other processes compete for CPU 0, the kernel shares it per thread, and"
  echo "shoald has several threads where Redis has one, which flatters shoal's ops/s on a busy machine."
  echo "shoal is loaded through its Go client (one client with one connection per conn, a client.Pipeline"
  echo "of P requests in one write, then their P answers), Redis through the tool's own RESP2 client (P commands"
  echo "in one write). shoald runs with --queue-ring-size ${QUEUE_RING:-2GiB}, so that the queue rows, like Redis, hold"
  echo "their whole backlog in memory."
  if [ -n "$QUEUE_NOTE" ]; then echo "Queue rows: $QUEUE_NOTE."; fi
  if [ "$ERRS" != 0 ]; then echo "**$ERRS requests failed** over all runs; see the raw results."; fi
  echo
  cat "$TABLE"
  echo
  echo "Tool check: the same Redis loaded by redis-benchmark and by \`shoal bench --target redis://\`,"
  echo "alternately, medians of $REPS runs of $(fmt_int "$N_CHECK1") (pipeline 1) or $(fmt_int "$N_CHECK16") (pipeline 16) requests."
  echo "The Redis CPU per request is the figure that noise does not move: equal, the two tools load Redis alike."
  echo "At pipeline 1 the single-threaded client is as busy as the server: redis-benchmark makes 7 system calls"
  echo "per request (5 of them epoll_ctl), shoal bench 3, so shoal bench can get more out of Redis. That raises"
  echo "the Redis side of the ratios above, never the shoal side."
  echo
  if [ -n "$CHECK_NOTE" ]; then echo "$CHECK_NOTE"; else cat "$CHECK_TABLE"; fi
  echo
  echo "Machine: $(nproc) CPUs ($CPU), kernel $(uname -r), $(go version | awk '{print $3}'), Redis $REDIS_VERSION;"
  echo "pinning: servers ${SRV_PIN[*]:-unpinned}, load generator ${CLI_PIN[*]:-unpinned} (both servers get one CPU: Redis is single-threaded, shoald runs with GOMAXPROCS 1);"
  echo "load average before $LOAD_BEFORE, after $LOAD_AFTER (other work on the machine makes every figure noisy: compare ratios of one run, not runs)."
  echo
  echo "Commands (PORTs are free ports picked by the script):"
  echo
  echo '```sh'
  echo "${SRV_PIN[*]:+${SRV_PIN[*]} }redis-server --bind 127.0.0.1 --port RPORT --save \"\" --appendonly no --daemonize no --logfile \"\""
  echo "${SRV_PIN[*]:+${SRV_PIN[*]} }shoald --listen 127.0.0.1:SPORT --http 127.0.0.1:HPORT --data TMPDIR/data --console=false --stats-interval 0 --queue-ring-size ${QUEUE_RING:-2GiB}"
  echo "# memory: redis-cli info memory (used_memory) and /proc/PID/status (VmRSS) around"
  echo "${CLI_PIN[*]:+${CLI_PIN[*]} }shoal bench --target redis://127.0.0.1:RPORT ${LOAD_ARGS[*]} --json --quiet"
  echo "${CLI_PIN[*]:+${CLI_PIN[*]} }shoal bench --addr 127.0.0.1:SPORT ${LOAD_ARGS[*]} --json --quiet"
  echo "# tool check, against the Redis server:"
  echo "${CLI_PIN[*]:+${CLI_PIN[*]} }redis-benchmark -h 127.0.0.1 -p RPORT --csv -t get|set -n N -c 50 -P 1|16 -r $N_KEYS -d 100"
  echo "${CLI_PIN[*]:+${CLI_PIN[*]} }shoal bench --target redis://127.0.0.1:RPORT --workload get|set --requests N --warmup 0 --conns 50 --pipeline 1|16 --keys $N_KEYS --value-size 100 --json --quiet"
  echo "# every row, for TARGET in --target redis://127.0.0.1:RPORT and --addr 127.0.0.1:SPORT:"
  echo "${CLI_PIN[*]:+${CLI_PIN[*]} }shoal bench TARGET --workload W --conns C --pipeline P --keys $N_KEYS --value-size 100 --duration $DURATION --warmup $WARMUP --json --quiet"
  echo '```'
  echo "<!-- vs-redis:end -->"
} >"$SECTION"

cat "$SECTION"
if [ "$DOC" != - ]; then
  if [ ! -f "$DOC" ]; then
    {
      echo "# shoal performance"
      echo
      echo "Measured figures of shoal, each section regenerated by the script that names it."
      echo "This machine is shared and noisy: read ratios measured in one run, not absolute numbers."
    } >"$DOC"
  fi
  if ! grep -q '<!-- vs-redis:begin -->' "$DOC"; then
    printf '\n<!-- vs-redis:begin -->\n<!-- vs-redis:end -->\n' >>"$DOC"
  fi
  awk -v sec="$SECTION" '
    /<!-- vs-redis:begin -->/ { while ((getline l < sec) > 0) print l; skip = 1; next }
    /<!-- vs-redis:end -->/   { skip = 0; next }
    !skip { print }
  ' "$DOC" >"$WORK/doc.new"
  cp "$WORK/doc.new" "$DOC"
  echo "wrote $DOC" >&2
fi
