#!/usr/bin/env bash
# vs-redis.sh - shoal against Redis on this machine, in one run, with one tool.
#
# For each placement (PLACEMENTS, default "pinned shared"):
#   pinned: both servers on CPU 0, the load generator on CPU 1 (taskset);
#   shared: nothing pinned, servers and load generator share every CPU,
# it starts its own redis-server (persistence off) and shoald (fresh data
# directory, --log-fsync 100ms) on free 127.0.0.1 ports, then:
#   1. memory per record: loads N_KEYS keys (key:%012d, 16 bytes) with
#      100-byte values into each with `shoal bench --workload load`; both
#      servers' resident memory (VmRSS) delta per record, and what each
#      engine counts itself (Redis used_memory, shoal_kv_memory_bytes);
#   2. throughput and latency with `shoal bench` for both targets, REPS
#      times, Redis and shoal alternating (and which goes first):
#        GET and SET at 50 conns x pipeline 1 and 16, and 1 conn x pipeline 1;
#        push/pop (LPUSH/RPOP) at 50 x 1 and 50 x 16;
#      every GET row runs after the load, so every GET hits (the hit rate is
#      in the table); each pop row pops as many records as the push row
#      before it pushed into the same server;
#   3. log append against dd: `shoal log bench` (50 writers, LogPutBatch)
#      for LOG_DURATION with 100-byte values (batches of 100) and 4 KiB
#      values (batches of 16), alternating with `dd conv=fdatasync` of the
#      same number of bytes the node wrote to its log files, REPS times;
#   4. tool check (pinned placement, when redis-benchmark is installed and
#      CHECK is not 0): redis-benchmark and `shoal bench --target redis://`
#      alternately against the same Redis, SET/GET at 50 x 1 and 50 x 16;
#   5. where the time goes (pinned placement, when perf is installed and
#      PROFILE is not 0): for a few rows, each server's CPU per request split
#      into user and kernel time, and its system calls and context switches
#      per request, counted by `perf stat` on syscall tracepoints for 2 s in
#      the middle of a run;
# then prints the medians, the ratios shoal/Redis and the goals of issue 18
# (met or missed, by how much), and writes them with the machine and the
# commands into docs/performance.md between the markers
# <!-- vs-redis:begin --> and <!-- vs-redis:end -->.
# It stops exactly the processes it started (by PID), also on error or Ctrl-C.
#
# Usage:  bench/vs-redis.sh            (from anywhere in the repository)
# Env:    REPS (3), DURATION (5s), WARMUP (1s) of every run, N_KEYS (1000000),
#         PLACEMENTS ("pinned shared"), LOG_DURATION (5s), LOG=0 skips step 3,
#         DOC (docs/performance.md; DOC=- prints only), CHECK=0 skips the tool
#         check, N_CHECK1 / N_CHECK16 (200000 / 1000000) requests per check run,
#         QUEUE_RING (2GiB) the ring size given to shoald, PROFILE=0 skips step 5,
#         DRIVER (frames) how shoal bench speaks to shoald: frames, as cheap
#         per request as its RESP client for Redis, or client (the Go client).
# Needs:  go (builds shoal and shoald), redis-server and redis-cli (Debian:
#         redis-server redis-tools), awk, curl, dd; taskset (util-linux) for
#         the pinned placement; redis-benchmark (redis-tools) for the tool check;
#         perf (linux-perf) with access to tracepoints for step 5.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPS=${REPS:-3}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
N_KEYS=${N_KEYS:-1000000}
PLACEMENTS=${PLACEMENTS:-pinned shared}
LOG_DURATION=${LOG_DURATION:-5s}
LOG=${LOG:-1}
CHECK=${CHECK:-1}
N_CHECK1=${N_CHECK1:-200000}
N_CHECK16=${N_CHECK16:-1000000}
QUEUE_RING=${QUEUE_RING:-2GiB}
PROFILE=${PROFILE:-1}
DRIVER=${DRIVER:-frames}
DOC=${DOC:-$ROOT/docs/performance.md}
HOST=127.0.0.1

export PATH="$PATH:/usr/local/go/bin"
missing=()
for c in go redis-server redis-cli awk curl dd; do
  command -v "$c" >/dev/null || missing+=("$c")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "vs-redis.sh: missing: ${missing[*]}" >&2
  echo "  redis-server, redis-cli: apt-get install redis-server redis-tools; go: Go 1.26 from https://go.dev/dl/" >&2
  exit 1
fi
NOTES=()
if [[ " $PLACEMENTS " == *" pinned "* ]]; then
  if [ "$(nproc)" -lt 2 ] || ! command -v taskset >/dev/null; then
    NOTES+=("The pinned placement was skipped: it needs 2 CPUs and taskset (util-linux).")
    PLACEMENTS=${PLACEMENTS//pinned/}
  fi
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vs-redis.XXXXXX")
RPID=
SPID=
stop_servers() {
  local p
  for p in $RPID $SPID; do
    if kill -0 "$p" 2>/dev/null; then
      kill "$p"
      wait "$p" 2>/dev/null || true
    fi
  done
  RPID=
  SPID=
  rm -rf "$WORK/data" "$WORK/dd.bin"
}
trap 'stop_servers; echo "servers stopped; logs and raw results in $WORK" >&2' EXIT
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

SRV_PIN=()
CLI_PIN=()
# start_servers PLACEMENT starts Redis and shoald placed as PLACEMENT says.
start_servers() {
  SRV_PIN=()
  CLI_PIN=()
  if [ "$1" = pinned ]; then
    SRV_PIN=(taskset -c 0)
    CLI_PIN=(taskset -c 1)
  fi
  RPORT=$(free_port)
  SPORT=$(free_port "$RPORT")
  HPORT=$(free_port "$RPORT" "$SPORT")
  # taskset execs its command, so $! is the server's own PID.
  "${SRV_PIN[@]}" redis-server --bind "$HOST" --port "$RPORT" --save "" --appendonly no \
    --daemonize no --logfile "" >"$WORK/redis-$1.log" 2>&1 &
  RPID=$!
  # The queue rows push for DURATION before they pop: at pipeline 16 that is
  # millions of records. Redis holds them in memory; shoald gets a ring big
  # enough to do the same (with the default 64 MiB ring the rest overflows to
  # disk, which docs/performance.md "Queue" measures on its own).
  "${SRV_PIN[@]}" "$WORK/bin/shoald" --listen "$HOST:$SPORT" --http "$HOST:$HPORT" \
    --data "$WORK/data" --console=false --stats-interval 0 --queue-ring-size "$QUEUE_RING" \
    --log-fsync 100ms >"$WORK/shoald-$1.log" 2>&1 &
  SPID=$!
  local i
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
  echo "[$1] redis pid $RPID on $HOST:$RPORT, shoald pid $SPID on $HOST:$SPORT" >&2
}

rcli() { redis-cli -h "$HOST" -p "$RPORT" "$@"; }
# target_args NAME prints the shoal bench arguments of target NAME.
target_args() {
  if [ "$1" = redis ]; then echo "--target redis://$HOST:$RPORT"; else echo "--addr $HOST:$SPORT --driver $DRIVER"; fi
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
# cpu_ticks PID prints the user+system CPU time of process PID, in clock ticks.
cpu_ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
rss_bytes() { awk '/^VmRSS:/{print $2 * 1024}' "/proc/$1/status"; }
used_memory() { rcli info memory | tr -d '\r' | awk -F: '$1=="used_memory"{print $2}'; }
kv_memory() { curl -s "http://$HOST:$HPORT/metrics" | awk '$1=="shoal_kv_memory_bytes"{printf "%d", $2}'; }

REDIS_VERSION=$(redis-server --version | awk '{print $3}' | sed 's/^v=//')
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# config lines: label workload conns pipeline
CONFIGS=(
  "GET get 50 1" "SET set 50 1" "GET get 50 16" "SET set 50 16" "GET get 1 1" "SET set 1 1"
  "push push 50 1" "pop pop 50 1" "push push 50 16" "pop pop 50 16"
)
LOAD_ARGS=(--workload load --keys "$N_KEYS" --value-size 100 --conns 4 --pipeline 64)
MEM=$WORK/memory.csv
RAW=$WORK/raw.csv
LOGRAW=$WORK/log.csv
CHECK_RAW=$WORK/check.csv
echo "placement,target,rss_per_record,engine_per_record" >"$MEM"
echo "placement,target,label,conns,pipeline,rep,ops_per_sec,p50_ms,p99_ms,errors,cpu_us_per_req,hit_pct" >"$RAW"
echo "placement,size,rep,shoal_bytes,shoal_seconds,shoal_mb_s,dd_mb_s,records_per_sec,cpu_us_per_record" >"$LOGRAW"
echo "tool,label,conns,pipeline,rep,ops_per_sec,cpu_us_per_req" >"$CHECK_RAW"
PROF_RAW=$WORK/profile.csv
echo "target,label,conns,pipeline,ops_per_sec,user_us,kernel_us,syscalls,reads,eagain,writes,epoll,futex_sleep,ctx_switches" >"$PROF_RAW"

# measure_memory PLACEMENT loads the key space into both servers.
measure_memory() {
  echo "[$1] loading $N_KEYS keys into each" >&2
  local r0 r1 u0 u1 s0 s1 k0 k1 keys
  r0=$(rss_bytes "$RPID")
  u0=$(used_memory)
  bench redis "${LOAD_ARGS[@]}" >"$WORK/load-redis-$1.json"
  sleep 1
  r1=$(rss_bytes "$RPID")
  u1=$(used_memory)
  keys=$(rcli dbsize | tr -d '\r')
  s0=$(rss_bytes "$SPID")
  k0=$(kv_memory)
  bench shoal "${LOAD_ARGS[@]}" >"$WORK/load-shoal-$1.json"
  sleep 1
  s1=$(rss_bytes "$SPID")
  k1=$(kv_memory)
  awk -v p="$1" -v a="$r0" -v b="$r1" -v c="$u0" -v d="$u1" -v n="$keys" \
    'BEGIN{printf "%s,redis,%.1f,%.1f\n", p, (b-a)/n, (d-c)/n}' >>"$MEM"
  awk -v p="$1" -v a="$s0" -v b="$s1" -v c="$k0" -v d="$k1" -v n="$N_KEYS" \
    'BEGIN{printf "%s,shoal,%.1f,%.1f\n", p, (b-a)/n, (d-c)/n}' >>"$MEM"
}

# run_rows PLACEMENT runs every row of CONFIGS REPS times, alternating.
run_rows() {
  local rep order cfg label workload conns pipeline t pid c0 c1 j row n m f span
  local -A pushed=()
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
        # removes its channel at the end by default); a pop row pops as
        # many as the push row before it pushed, so that every pop hits.
        span=(--duration "$DURATION" --warmup "$WARMUP")
        if [ "$workload" = pop ] && [ -n "${pushed[$t]:-}" ]; then span=(--requests "${pushed[$t]}" --warmup 0); fi
        j=$(bench "$t" --workload "$workload" --conns "$conns" --pipeline "$pipeline" --keys "$N_KEYS" \
          --value-size 100 "${span[@]}" --cleanup=false) || j='{}'
        c1=$(cpu_ticks "$pid")
        row="$1,$t,$label,$conns,$pipeline,$rep"
        for f in ops_per_sec p50_ms p99_ms errors; do row="$row,$(echo "$j" | json_field $f)"; done
        n=$(($(echo "$j" | json_field requests) + $(echo "$j" | json_field warmup_requests)))
        if [ "$workload" = push ]; then pushed[$t]=$((n - $(echo "$j" | json_field errors))); fi
        m=$(echo "$j" | json_field misses)
        row="$row,$(awk -v c=$((c1 - c0)) -v hz="$HZ" -v n="$n" 'BEGIN{if (n > 0) printf "%.2f", c / hz * 1e6 / n}')"
        row="$row,$(echo "$j" | json_field requests | awk -v m="${m:-0}" '{if ($1 > 0) printf "%.1f", 100 * (1 - m / $1)}')"
        echo "$row" >>"$RAW"
        echo "[$1] rep $rep $label ${conns}x$pipeline $t: $(echo "$j" | json_field ops_per_sec) ops/s" >&2
      done
    done
  done
}

# log_bytes prints the bytes of the node's log files.
log_bytes() { du -sb "$WORK/data/log-data" 2>/dev/null | awk '{print $1}'; }
# dd_rate BYTES writes BYTES (in MiB) with dd conv=fdatasync; prints MB/s.
dd_rate() {
  local mib=$((($1 + 1048575) / 1048576))
  "${SRV_PIN[@]}" dd if=/dev/zero of="$WORK/dd.bin" bs=1M count="$mib" conv=fdatasync 2>&1 |
    awk '/copied/{for (i = 1; i <= NF; i++) if ($i == "s,") printf "%.1f", $1 / $(i-1) / 1e6}'
  rm -f "$WORK/dd.bin"
}
# run_log PLACEMENT appends to a log channel and writes the same bytes with dd.
run_log() {
  local rep cfg size batch b0 b1 c0 c1 j recs secs ddr ch
  for rep in $(seq 1 "$REPS"); do
    for cfg in "100 100" "4096 16"; do
      read -r size batch <<<"$cfg"
      ch=vsdd-$size-$rep
      b0=$(log_bytes)
      c0=$(cpu_ticks "$SPID")
      j=$("${CLI_PIN[@]}" "$SHOAL" --addr "$HOST:$SPORT" log bench "$ch" --size "$size" --batch "$batch" \
        --duration "$LOG_DURATION" --json) || j='{}'
      c1=$(cpu_ticks "$SPID")
      sleep 0.3 # the interval fsync
      b1=$(log_bytes)
      recs=$(echo "$j" | json_field records)
      secs=$(echo "$j" | json_field seconds)
      ddr=$(dd_rate $((b1 - b0)))
      awk -v p="$1" -v s="$size" -v r="$rep" -v b=$((b1 - b0)) -v t="${secs:-0}" -v d="$ddr" -v n="${recs:-0}" \
        -v c=$((c1 - c0)) -v hz="$HZ" 'BEGIN{if (t > 0 && n > 0) printf "%s,%s,%s,%d,%.2f,%.1f,%s,%.0f,%.2f\n", p, s, r, b, t, b / t / 1e6, d, n / t, c / hz * 1e6 / n}' >>"$LOGRAW"
      "$SHOAL" --addr "$HOST:$SPORT" rmchannel "$ch" >/dev/null 2>&1 || true
      echo "[$1] rep $rep log ${size} B x $batch: $(tail -1 "$LOGRAW" | cut -d, -f6) MB/s, dd $ddr MB/s" >&2
    done
  done
}

# run_check compares redis-benchmark with shoal bench against the same Redis.
run_check() {
  local rep order cfg label workload conns pipeline n tool c0 c1 ops
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
}

# run_profile counts, for a few rows and both servers, CPU time and system
# calls per request during PROF_WINDOW seconds in the middle of a run.
PROF_WINDOW=2
PROF_EVENTS=raw_syscalls:sys_enter,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_futex,syscalls:sys_enter_nanosleep,syscalls:sys_enter_clock_nanosleep,context-switches
# served TARGET prints how many requests the server has answered so far.
served() {
  if [ "$1" = redis ]; then
    rcli info stats | tr -d '\r' | awk -F: '$1=="total_commands_processed"{print $2}'
  else
    curl -s "http://$HOST:$HPORT/metrics" | awk '/^shoal_request_duration_seconds_count/{s+=$2} END{printf "%d", s}'
  fi
}
# prof_window TARGET PID prints the requests TARGET served during
# PROF_WINDOW seconds and PID's user and system CPU ticks before and after.
prof_window() {
  local r0 r1 c0 c1
  r0=$(served "$1")
  c0=$(awk '{sub(/^.*\) /, ""); print $12, $13}' "/proc/$2/stat")
  sleep "$PROF_WINDOW"
  r1=$(served "$1")
  c1=$(awk '{sub(/^.*\) /, ""); print $12, $13}' "/proc/$2/stat")
  echo "$((r1 - r0)) $c0 $c1"
}
run_profile() {
  export -f prof_window served rcli
  export HOST RPORT HPORT PROF_WINDOW
  local cfg label workload conns pipeline t pid win ops
  for cfg in "GET get 50 1" "SET set 50 1" "GET get 50 16" "SET set 50 16" "push push 50 16"; do
    read -r label workload conns pipeline <<<"$cfg"
    for t in redis shoal; do
      pid=$RPID
      if [ "$t" = shoal ]; then pid=$SPID; fi
      bench "$t" --workload "$workload" --conns "$conns" --pipeline "$pipeline" --keys "$N_KEYS" \
        --value-size 100 --duration $((PROF_WINDOW + 2))s --warmup 0s --cleanup=false >"$WORK/prof.json" &
      sleep 1
      # The EAGAIN filter applies to the -e before it (sys_exit_read alone).
      # perf counts while prof_window runs, which reads the request and CPU
      # counters at both ends of its sleep.
      win=$(perf stat -x, -o "$WORK/perf.txt" -e "$PROF_EVENTS" -e syscalls:sys_exit_read --filter 'ret == -11' \
        -p "$pid" -- bash -c 'prof_window "$0" "$1"' "$t" "$pid" 2>/dev/null) || win=
      wait $! || true
      ops=$(json_field ops_per_sec <"$WORK/prof.json")
      awk -F, -v t="$t" -v l="$label" -v c="$conns" -v p="$pipeline" -v ops="${ops:-0}" -v win="$win" -v hz="$HZ" '
        { v[$3] = $1 }
        END {
          split(win, a, " "); n = a[1]
          if (n <= 0 || !("raw_syscalls:sys_enter" in v)) exit
          printf "%s,%s,%s,%s,%.0f,%.2f,%.2f", t, l, c, p, ops, (a[4]-a[2]) / hz * 1e6 / n, (a[5]-a[3]) / hz * 1e6 / n
          split("raw_syscalls:sys_enter syscalls:sys_enter_read syscalls:sys_exit_read syscalls:sys_enter_write", k, " ")
          for (i = 1; i <= 4; i++) printf ",%.2f", v[k[i]] / n
          printf ",%.3f", (v["syscalls:sys_enter_epoll_wait"] + v["syscalls:sys_enter_epoll_pwait"]) / n
          printf ",%.3f", (v["syscalls:sys_enter_futex"] + v["syscalls:sys_enter_nanosleep"] + v["syscalls:sys_enter_clock_nanosleep"]) / n
          printf ",%.3f\n", v["context-switches"] / n
        }' "$WORK/perf.txt" >>"$PROF_RAW"
      echo "profile $label ${conns}x$pipeline $t: $(tail -1 "$PROF_RAW")" >&2
    done
  done
}

PROF_NOTE=
if [ "$PROFILE" = 0 ]; then
  PROF_NOTE="Where the time goes: skipped (PROFILE=0)."
elif ! command -v perf >/dev/null || ! perf stat -e raw_syscalls:sys_enter -- true >/dev/null 2>&1; then
  PROF_NOTE="Where the time goes: skipped, perf with access to syscall tracepoints is not available (Debian: linux-perf; root or kernel.perf_event_paranoid=-1)."
elif [[ " $PLACEMENTS " != *" pinned "* ]]; then
  PROF_NOTE="Where the time goes: skipped, it runs in the pinned placement."
fi
CHECK_NOTE=
if [ "$CHECK" = 0 ]; then
  CHECK_NOTE="Tool check skipped (CHECK=0)."
elif ! command -v redis-benchmark >/dev/null; then
  CHECK_NOTE="Tool check skipped: redis-benchmark is not installed (Debian: redis-tools)."
elif [[ " $PLACEMENTS " != *" pinned "* ]]; then
  CHECK_NOTE="Tool check skipped: it runs in the pinned placement."
fi
for placement in $PLACEMENTS; do
  start_servers "$placement"
  measure_memory "$placement"
  run_rows "$placement"
  if [ "$LOG" != 0 ]; then run_log "$placement"; fi
  if [ -z "$CHECK_NOTE" ] && [ "$placement" = pinned ]; then run_check; fi
  if [ -z "$PROF_NOTE" ] && [ "$placement" = pinned ]; then run_profile; fi
  stop_servers
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- tables and goals --------------------------------------------------------
median() { sort -g | awk '{a[NR]=$1} END{if (NR==0) print ""; else if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
# col PLACEMENT TARGET LABEL CONNS PIPELINE FIELD prints the median of FIELD.
col() { awk -F, -v q="$1" -v t="$2" -v l="$3" -v c="$4" -v p="$5" -v k="$6" '$1==q && $2==t && $3==l && $4==c && $5==p && $k!="" {print $k}' "$RAW" | median; }
fmt_int() { awk -v x="$1" 'BEGIN{ if (x=="") {print "n/a"; exit} s=sprintf("%d", x+0.5); o=""; while (length(s)>3) {o="," substr(s,length(s)-2) o; s=substr(s,1,length(s)-3)} print s o}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a=="" || b=="" || b==0) print ""; else printf "%.2f", a/b}'; }
or_na() { if [ -n "$1" ]; then echo "$1"; else echo "n/a"; fi; }
mem() { awk -F, -v q="$1" -v t="$2" -v k="$3" '$1==q && $2==t {print $k}' "$MEM"; }
logcol() { awk -F, -v q="$1" -v s="$2" -v k="$3" '$1==q && $2==s && $k!="" {print $k}' "$LOGRAW" | median; }
logshare() { awk -F, -v q="$1" -v s="$2" '$1==q && $2==s && $7>0 {print $6/$7*100}' "$LOGRAW" | median; }

GOALS=$WORK/goals.md
echo "| goal (issue 18) | measured | verdict |" >"$GOALS"
echo "|---|---:|---|" >>"$GOALS"
# goal TEXT VALUE MIN [UNIT] adds a line: VALUE must be >= MIN (or <= -MIN).
goal() {
  local v
  v=$(awk -v x="$2" -v m="$3" 'BEGIN{ if (x=="") {print "not measured"; exit}
    if (m < 0) { if (x <= -m) print "met"; else printf "**missed** by %.0f %%\n", (x/-m - 1) * 100 }
    else { if (x >= m) print "met"; else printf "**missed** by %.0f %%\n", (1 - x/m) * 100 } }')
  echo "| $1 | $(or_na "$2")${4:-} | $v |" >>"$GOALS"
}

TABLES=$WORK/tables.md
: >"$TABLES"
for placement in $PLACEMENTS; do
  {
    if [ "$placement" = pinned ]; then
      echo "### Pinned: each server on CPU 0, the load generator on CPU 1"
    else
      echo "### Shared: nothing pinned, servers and load generator share both CPUs"
    fi
    echo
    echo "| workload | conns x pipeline | Redis ops/s | shoal ops/s | **shoal/Redis** | Redis p50 / p99 ms | shoal p50 / p99 ms | server CPU µs/request Redis / shoal | hits % Redis / shoal |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for cfg in "${CONFIGS[@]}"; do
      read -r label workload conns pipeline <<<"$cfg"
      ro=$(col "$placement" redis "$label" "$conns" "$pipeline" 7)
      so=$(col "$placement" shoal "$label" "$conns" "$pipeline" 7)
      hits="|"
      if [ "$workload" = get ] || [ "$workload" = pop ]; then
        hits="$(col "$placement" redis "$label" "$conns" "$pipeline" 12) / $(col "$placement" shoal "$label" "$conns" "$pipeline" 12) |"
      fi
      echo "| $label | $conns x $pipeline | $(fmt_int "$ro") | $(fmt_int "$so") | **$(or_na "$(ratio "$so" "$ro")")** |" \
        "$(col "$placement" redis "$label" "$conns" "$pipeline" 8) / $(col "$placement" redis "$label" "$conns" "$pipeline" 9) |" \
        "$(col "$placement" shoal "$label" "$conns" "$pipeline" 8) / $(col "$placement" shoal "$label" "$conns" "$pipeline" 9) |" \
        "$(col "$placement" redis "$label" "$conns" "$pipeline" 11) / $(col "$placement" shoal "$label" "$conns" "$pipeline" 11) | $hits"
    done
    echo
    echo "Memory per record after loading $(fmt_int "$N_KEYS") records (16 B key, 100 B value): resident memory (VmRSS) delta"
    echo "Redis $(mem "$placement" redis 3) B, shoal $(mem "$placement" shoal 3) B (**$(or_na "$(ratio "$(mem "$placement" shoal 3)" "$(mem "$placement" redis 3)")")**);"
    echo "what the engines count: Redis used_memory $(mem "$placement" redis 4) B, shoal's kv engine (shoal_kv_memory_bytes)"
    echo "$(mem "$placement" shoal 4) B, that is $(awk -v x="$(mem "$placement" shoal 4)" 'BEGIN{printf "%.1f", x-116}') B beyond the key and value."
    if [ "$LOG" != 0 ]; then
      echo
      echo "| log append, 50 writers, --log-fsync 100ms | records/s | log files MB/s | dd conv=fdatasync MB/s | **share of dd** | node CPU µs/record |"
      echo "|---|---:|---:|---:|---:|---:|"
      for s in 100 4096; do
        b=100
        if [ "$s" = 4096 ]; then b=16; fi
        echo "| $s B values, LogPutBatch of $b | $(fmt_int "$(logcol "$placement" $s 8)") | $(logcol "$placement" $s 6) |" \
          "$(logcol "$placement" $s 7) | **$(or_na "$(awk -v x="$(logshare "$placement" $s)" 'BEGIN{if (x!="") printf "%.0f %%", x}')")** | $(logcol "$placement" $s 9) |"
      done
    fi
    echo
  } >>"$TABLES"
  r() { ratio "$(col "$placement" shoal "$1" "$2" "$3" 7)" "$(col "$placement" redis "$1" "$2" "$3" 7)"; }
  if [ "$placement" = pinned ]; then
    goal "pinned SET 50 x 1 ≥ 1.2× Redis" "$(r SET 50 1)" 1.2 ×
    goal "pinned GET 50 x 1 ≥ 1.2× Redis" "$(r GET 50 1)" 1.2 ×
    goal "pinned SET 50 x 16 ≥ 1.1× Redis" "$(r SET 50 16)" 1.1 ×
    goal "pinned GET 50 x 16 ≥ 1.1× Redis" "$(r GET 50 16)" 1.1 ×
  else
    goal "shared SET 50 x 1 ≥ 1.0× Redis" "$(r SET 50 1)" 1.0 ×
    goal "shared GET 50 x 1 ≥ 1.0× Redis" "$(r GET 50 1)" 1.0 ×
    goal "shared SET 50 x 16 ≥ 1.0× Redis" "$(r SET 50 16)" 1.0 ×
    goal "shared GET 50 x 16 ≥ 1.0× Redis" "$(r GET 50 16)" 1.0 ×
  fi
  for p in 1 16; do
    goal "$placement push 50 x $p ≥ 1.0× LPUSH" "$(r push 50 $p)" 1.0 ×
    goal "$placement pop 50 x $p ≥ 1.0× RPOP" "$(r pop 50 $p)" 1.0 ×
  done
  if [ "$placement" = pinned ] && [ "$LOG" != 0 ]; then
    goal "pinned log append (100 B values) ≥ 50 % of dd" "$(logshare pinned 100 | awk '{printf "%.0f", $1}')" 50 " %"
    goal "pinned log append (4 KiB values) ≥ 50 % of dd" "$(logshare pinned 4096 | awk '{printf "%.0f", $1}')" 50 " %"
  fi
done
first=${PLACEMENTS%% *}
first=${first:-shared}
goal "RSS per record ≤ 150 B ($first)" "$(mem "$first" shoal 3)" -150 " B"
goal "kv overhead ≤ 30 B per record ($first)" "$(awk -v x="$(mem "$first" shoal 4)" 'BEGIN{if (x!="") printf "%.1f", x-116}')" -30 " B"

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
      echo "| $label | 50 x $pipeline | $(fmt_int "$rb") | $(fmt_int "$sb") | $(or_na "$(ratio "$sb" "$rb")") |" \
        "$(ccol redis-benchmark "$label" "$pipeline" 7) / $(ccol shoal-bench "$label" "$pipeline" 7) |"
    done
  } >"$CHECK_TABLE"
fi
PROF_TABLE=$WORK/profile-table.md
if [ -z "$PROF_NOTE" ]; then
  {
    echo "| workload | server | ops/s | CPU µs/request: user + kernel | system calls/request | reads (EAGAIN) | writes | epoll waits | futex + sleeps | context switches |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    awk -F, 'NR>1 {printf "| %s %s x %s | %s | %s | %.2f + %.2f | %s | %s (%s) | %s | %s | %s | %s |\n", $2, $3, $4, ($1=="redis" ? "Redis" : "shoal"), $5, $6, $7, $8, $9, $10, $11, $12, $13, $14}' "$PROF_RAW"
  } >"$PROF_TABLE"
fi
ERRS=$(awk -F, 'NR>1 && $10!="" {s+=$10} END{print s+0}' "$RAW")
CPU=$(awk -F': *' '/^model name/{print $2; exit}' /proc/cpuinfo)

SECTION=$WORK/section.md
{
  echo "<!-- vs-redis:begin -->"
  echo "## shoal vs Redis (generated by bench/vs-redis.sh, $(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "Machine: $(nproc) CPUs ($CPU), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), $(go version | awk '{print $3}'), Redis $REDIS_VERSION;"
  echo "load average before $LOAD_BEFORE, after $LOAD_AFTER."
  echo "Medians of $REPS runs per row, each $DURATION after a $WARMUP warmup, Redis and shoal alternating (the first of each"
  echo "pair alternating too). Keys key:%012d over $(fmt_int "$N_KEYS") keys, all loaded first (every GET hits: hits % column),"
  echo "100-byte values. Latencies are per request, from the start of its pipelined batch to its answer."
  echo "Server CPU per request is the server process's user+system CPU time over the run (/proc/PID/stat)"
  echo "divided by the requests answered, warmup included: the figure that other work on the machine moves least."
  if [ "$DRIVER" = frames ]; then
    echo "shoal is loaded through the tool's frames driver (\`--driver frames\`: P request frames in one write, then their"
    echo "P answers, on one goroutine per connection), Redis through the tool's RESP2 client (P commands in one write, the same way):"
    echo "load generators of about the same cost per request, so that the rows compare the servers."
  else
    echo "shoal is loaded through its Go client (\`--driver client\`: one connection per conn, a client.Pipeline of P requests"
    echo "in one write, then their P answers), Redis through the tool's own RESP2 client (P commands in one write)."
  fi
  echo "In the pinned placement shoald runs with GOMAXPROCS 1 (Go reads the affinity), Redis is single-threaded;"
  echo "shared, shoald uses both CPUs, as on the box a user has. shoald runs with --queue-ring-size $QUEUE_RING,"
  echo "so that the queue rows, like Redis, hold their whole backlog in memory; each pop row pops as many records as"
  echo "the push row before it pushed (so it runs for as many requests, not for $DURATION)."
  for n in "${NOTES[@]}"; do echo "$n"; done
  if [ "$ERRS" != 0 ]; then echo "**$ERRS requests failed** over all runs; see the raw results."; fi
  echo
  cat "$GOALS"
  echo
  cat "$TABLES"
  if [ "$LOG" != 0 ]; then
    echo "Log rows: \`shoal log bench\` (50 writers sharing one client, LogPutBatch) for $LOG_DURATION against shoald with"
    echo "--log-fsync 100ms; MB/s are the bytes the node's log files grew by (frames: values, timestamps, headers, CRCs)"
    echo "per second; dd writes the same number of bytes (rounded up to MiB) from /dev/zero with bs=1M conv=fdatasync"
    echo "in the same file system, run right after each append run, placed like the server."
    echo
  fi
  echo "Tool check (pinned): the same Redis loaded by redis-benchmark and by \`shoal bench --target redis://\`,"
  echo "alternately, medians of $REPS runs of $(fmt_int "$N_CHECK1") (pipeline 1) or $(fmt_int "$N_CHECK16") (pipeline 16) requests."
  echo "The Redis CPU per request is the figure that noise does not move: equal, the two tools load Redis alike."
  echo
  if [ -n "$CHECK_NOTE" ]; then echo "$CHECK_NOTE"; else cat "$CHECK_TABLE"; fi
  echo
  echo "Where the time goes (pinned; one run of $((PROF_WINDOW + 2)) s per row, counted over $PROF_WINDOW s in its middle: CPU time from"
  echo "/proc/PID/stat, system calls and context switches from \`perf stat -e raw_syscalls:sys_enter,syscalls:sys_enter_read,...\`"
  echo "on the server's process; every figure per request the server counted in that time: Redis total_commands_processed,"
  echo "shoal the requests of /metrics shoal_request_duration_seconds; the tracepoints make system calls slower, not fewer):"
  echo
  if [ -n "$PROF_NOTE" ]; then echo "$PROF_NOTE"; else cat "$PROF_TABLE"; fi
  echo
  echo "Commands (PORTs are free ports picked by the script; PIN is \`taskset -c 0\` for servers and \`taskset -c 1\`"
  echo "for the load generator in the pinned placement, nothing in the shared one):"
  echo
  echo '```sh'
  echo "PIN redis-server --bind 127.0.0.1 --port RPORT --save \"\" --appendonly no --daemonize no --logfile \"\""
  echo "PIN shoald --listen 127.0.0.1:SPORT --http 127.0.0.1:HPORT --data TMPDIR/data --console=false --stats-interval 0 --queue-ring-size $QUEUE_RING --log-fsync 100ms"
  echo "# memory: VmRSS of /proc/PID/status, redis-cli info memory (used_memory), /metrics shoal_kv_memory_bytes around"
  echo "PIN shoal bench --target redis://127.0.0.1:RPORT ${LOAD_ARGS[*]} --json --quiet"
  echo "PIN shoal bench --addr 127.0.0.1:SPORT --driver $DRIVER ${LOAD_ARGS[*]} --json --quiet"
  echo "# every row, for TARGET in --target redis://127.0.0.1:RPORT and --addr 127.0.0.1:SPORT --driver $DRIVER:"
  echo "PIN shoal bench TARGET --workload W --conns C --pipeline P --keys $N_KEYS --value-size 100 --duration $DURATION --warmup $WARMUP --cleanup=false --json --quiet"
  echo "# pop rows: --requests PUSHED --warmup 0 instead of --duration and --warmup"
  echo "# log rows, then dd of the bytes the log files grew by:"
  echo "PIN shoal --addr 127.0.0.1:SPORT log bench CH --size 100|4096 --batch 100|16 --duration $LOG_DURATION --json"
  echo "PIN dd if=/dev/zero of=TMPDIR/dd.bin bs=1M count=MIB conv=fdatasync"
  echo "# tool check, against the Redis server:"
  echo "PIN redis-benchmark -h 127.0.0.1 -p RPORT --csv -t get|set -n N -c 50 -P 1|16 -r $N_KEYS -d 100"
  echo "PIN shoal bench --target redis://127.0.0.1:RPORT --workload get|set --requests N --warmup 0 --conns 50 --pipeline 1|16 --keys $N_KEYS --value-size 100 --json --quiet"
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
