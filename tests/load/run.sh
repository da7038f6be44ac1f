#!/usr/bin/env bash
# Load and timing runs for understudy, by hand (not CI). Figures go to stdout; RESULTS.md keeps the
# last ones with the commands behind them.
#
#   bash tests/load/run.sh [load] [memory] [diag] [coldstart] [bench] [soak]   (no argument: load coldstart bench)
#
# load       The webhook acknowledgement path of the local app (verify HS256 + qsh, tenant lookup,
#            rule match, idempotency mark, enqueue) under wrk, side by side with `hello-floor` (a
#            trivial axum server, the floor) in the same run, same tool, same Lua script:
#              - load-prep writes TENANTS tenants into a fresh embedded store (before the app opens it:
#                redb locks the file), base URL http://127.0.0.1:9/wiki (closed port: the worker's
#                Confluence calls fail at once), and a wrk script with one signed token per tenant;
#                every request carries a new page version, so each is a new event that is queued;
#              - the app runs with EDIT_RULES matching every event, ALLOWED_TENANT_HOSTS=127.0.0.1,
#                EDIT_MAX_RECEIVES=1;
#              - it first waits (90 s at most) for the machine to be quiet: load average under 0.5;
#              - for CONNS in $CONN_LEVELS: the floor; a fresh app whose rules match nothing (the
#                acknowledgement path: verify, tenant, rules, 204); the floor again; a fresh app with
#                LOCAL_WORKER=off (the durable path alone: every event marked and queued before its
#                204; each app run is compared with the floor run just before it); a fresh app
#                as run (its worker draining the queue on the same cores); each for DURATION (wrk measures over its
#                whole duration, so runs are bounded by time; MAX_REQUESTS per wrk thread is only a
#                safety stop, and a run that hits it is flagged because its requests/s would be
#                wrong). Prints p50/p90/p99, requests/s, the app/floor ratio, and the app's peak
#                memory (VmHWM) after the load. The app's run must reach 10 000 requests.
#              - PASS/FAIL against issue 19's bounds: the acknowledgement path at 0.8 or more of
#                the floor's requests/s, the durable path at 0.3 or more, and at 50 connections
#                each p99 within 3x the floor's; run.sh ends non-zero when one fails.
# memory     Whether the app's memory is bounded: the app as run (worker on) under MEMORY_ROUNDS (8)
#            back-to-back 50-connection wrk runs of DURATION, its RSS after each with the events so
#            far: it rises while the redb page caches (32 MiB each) fill, then stays flat.
# diag       Where the webhook path's time goes: the same app with DATA_DIR on tmpfs (/dev/shm: fsync
#            costs nothing there); the app with rules that match nothing (the path stops before the
#            idempotency mark and the enqueue, i.e. without its store write); and a count of
#            the fsync-family system calls per request (strace -c, a separate, slower run).
# profile    Where the app's CPU goes on the webhook path: perf record (call graphs) of the app under
#            wrk at PROFILE_CONNS (50) connections (PROFILE_PATH=ack: rules that match nothing;
#            the worker off either way), then perf report's heaviest entries. Needs
#            perf, and a build that keeps symbols: CARGO_TARGET_DIR=/tmp/prof-target CARGO_PROFILE_RELEASE_STRIP=none
#            CARGO_PROFILE_RELEASE_DEBUG=line-tables-only (run.sh passes both through to cargo).
# soak       A bounded soak of the local app (`soak`, tests/load/src/bin/soak.rs; issue 18): the
#            Confluence simulator in the soak process (SOAK_PAGES pages, 200, SOAK_RESTRICTED_PERCENT,
#            20 %, view- or edit-restricted to the person who edits them, policy impersonate), the
#            app as its own process with the worker on, installed into it. First the pipeline's
#            throughput (closed loop for SOAK_BURST_SECONDS, 20: each person edit waits for the
#            app's edit of it; then the queue drains), then SOAK_SECONDS (600) at half of it
#            (SOAK_RATE overrides), one 429 with Retry-After: 1 every SOAK_429_EVERY_MS (5000) on
#            the app's page reads and updates. Every 10 s: RSS, webhook p50/p99, edit lag of probe
#            edits, queue backlog. At the end, with the app stopped, every accepted webhook must
#            have exactly one audit record in its store. Exits non-zero when memory grows more than
#            SOAK_MAX_RSS_GROWTH_MIB (32) after warm-up, a p99 drifts more than SOAK_MAX_P99_DRIFT
#            (x2) from the first minute to the last, the backlog grows, or a record is missing or
#            doubled (run.sh then ends non-zero after its other phases). Not a default phase: it
#            takes SOAK_SECONDS plus about a minute; run it on a quiet machine.
# coldstart  Each Lambda binary against a fake Runtime API (tests/load/coldstart.py lambda), and the
#            local app's own start (coldstart.py local).
# bench      cargo bench -p connect-auth, then node tests/interop/bench.js, then
#            cargo bench -p understudy-store --bench store. Run it when the machine is quiet.
#
# Environment: TENANTS (50), DURATION (20s), MAX_REQUESTS (2000000), CONN_LEVELS ("1 50"),
# WRK_THREADS (1), ONE_CONNECTION_CORES (separate; see place_one_connection), COLD_RUNS (15), SKIP_BUILD (set: use the release binaries already built, e.g.
# while another build holds cargo's lock). Needs cargo, wrk, python3 (and node/npm for bench).
# Everything it starts is killed on exit; scratch files live in a mktemp directory removed on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/release"
TENANTS="${TENANTS:-50}"
MAX_REQUESTS="${MAX_REQUESTS:-2000000}"
DURATION="${DURATION:-20s}"
CONN_LEVELS="${CONN_LEVELS:-1 50}"
WRK_THREADS="${WRK_THREADS:-1}"
COLD_RUNS="${COLD_RUNS:-15}"

PHASES=("$@")
[ ${#PHASES[@]} -eq 0 ] && PHASES=(load coldstart bench)

WORK="$(mktemp -d -t understudy-load.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n== %s  [load average: %s]\n' "$*" "$(cut -d' ' -f1-3 /proc/loadavg)"; }
need() { command -v "$1" >/dev/null || { echo "run.sh: $1 is required" >&2; exit 1; }; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # URL: until it answers (10 s at most)
    for _ in $(seq 1 200); do
        python3 - "$1" <<'EOF' 2>/dev/null && return 0
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=1)
EOF
        sleep 0.05
    done
    echo "run.sh: $1 did not answer" >&2
    return 1
}
# Where wrk and the servers run at one connection (ONE_CONNECTION_CORES): there each request
# crosses from wrk to the server and back while the other side's core sits idle, and on this VM
# waking an idle core costs more than either server's work. The floor answered 51 000 requests/s
# with wrk on its core and 13 000-16 500 with wrk on the other; left to the scheduler (`any`), a
# run lands anywhere between, so the one-connection ratio moved between 0.63 and 0.99 from run to
# run of the same code. `separate` (default): wrk on the first core, the floor and each app on the
# others, as a webhook sender on another machine would be. `same`: all on the first core. At more
# connections nobody idles and the scheduler places them (SERVER_CPUS and WRK_CPUS stay empty).
ONE_CONNECTION_CORES="${ONE_CONNECTION_CORES:-separate}"
SERVER_CPUS=""
WRK_CPUS=""
place_one_connection() { # CONNS: sets SERVER_CPUS and WRK_CPUS, and moves the floor's threads
    local cores
    cores="$(nproc)"
    SERVER_CPUS="" WRK_CPUS=""
    if [ "$1" = 1 ] && [ "$ONE_CONNECTION_CORES" != any ] && command -v taskset >/dev/null; then
        case "$ONE_CONNECTION_CORES" in
        separate) [ "$cores" -ge 2 ] && WRK_CPUS=0 SERVER_CPUS="1-$((cores - 1))" ;;
        same) WRK_CPUS=0 SERVER_CPUS=0 ;;
        *) echo "run.sh: ONE_CONNECTION_CORES is separate, same or any" >&2; exit 2 ;;
        esac
    fi
    taskset -a -p -c "${SERVER_CPUS:-0-$((cores - 1))}" "$FLOOR_PID" >/dev/null
    echo "c=$1: wrk on cores ${WRK_CPUS:-any}, the floor and the apps on cores ${SERVER_CPUS:-any}"
}
# Waits (90 s at most) for the 1-minute load average to fall under 0.5, e.g. after the build: the
# figures compare runs taken a minute apart, and other work on the cores moves them.
wait_quiet() {
    local waited=0
    while awk '{exit !($1 >= 0.5)}' /proc/loadavg; do
        if [ "$waited" -ge 90 ]; then
            echo "WARNING: the machine is busy (load average $(cut -d' ' -f1-3 /proc/loadavg)): the figures below move with it" >&2
            return 0
        fi
        [ "$waited" -eq 0 ] && echo "waiting for the machine to be quiet (load average $(cut -d' ' -f1 /proc/loadavg), 90 s at most)"
        sleep 5
        waited=$((waited + 5))
    done
}
hwm() { awk '/^VmHWM/ {printf "%.1f MiB", $2/1024}' "/proc/$1/status"; }

wanted() { local p; for p in "${PHASES[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }

need cargo
need python3
if wanted load || wanted diag || wanted memory; then need wrk; fi

if [ -z "${SKIP_BUILD:-}" ]; then
    say "building (release): understudy, load-tests, the four Lambda binaries"
    cargo build --release -p understudy -p load-tests \
        -p understudy-lifecycle -p understudy-webhooks -p understudy-edits
fi

MATCHING_RULES='{"restricted_pages": "skip", "rules": [{"name": "load", "events": ["page_updated"], "edit": [{"append": "<p>load</p>"}]}]}'
# Matches nothing the load sends: the path stops after the rule match (no mark, no enqueue).
NO_MATCH_RULES='{"restricted_pages": "skip", "rules": [{"name": "load", "events": ["page_created"], "edit": [{"append": "<p>load</p>"}]}]}'
RULES="$MATCHING_RULES"
# Starts the local app on a prepared data directory, with EDIT_RULES=$RULES. Sets APP_PID, APP_URL.
start_app() { # DATA_DIR LUA_OUT [WRAPPER...]
    local data="$1" lua="$2"
    shift 2
    local port
    port="$(free_port)"
    APP_URL="http://127.0.0.1:$port"
    "$TARGET/load-prep" --data-dir "$data" --lua "$lua" --app-base-url "$APP_URL" \
        --tenants "$TENANTS" --tenant-base-url "http://127.0.0.1:9/wiki"
    PORT="$port" DATA_DIR="$data" APP_BASE_URL="$APP_URL" \
        EDIT_RULES="$RULES" \
        ALLOWED_TENANT_HOSTS=127.0.0.1 EDIT_MAX_RECEIVES=1 LOCAL_RETRY_BASE_MS=1000 \
        ${SERVER_CPUS:+taskset -c "$SERVER_CPUS"} "$@" "$TARGET/understudy" >"$WORK/app-$port.log" 2>&1 &
    APP_PID=$!
    PIDS+=("$APP_PID")
    wait_http "$APP_URL/atlassian-connect.json"
}

stop_pid() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

field() { sed -n "s/.*\b$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
RUN=0
CLK_TCK="$(getconf CLK_TCK)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime of a process
# "name ticks" per thread of a process (utime + stime; the name from comm, which has no spaces
# in our threads). Fields are counted after the ")" that ends the name in stat.
thread_ticks() {
    local task
    for task in /proc/"$1"/task/*; do
        printf '%s %s\n' "$(cat "$task/comm" 2>/dev/null | tr ' ' '_')" \
            "$(sed 's/^.*) //' "$task/stat" 2>/dev/null | awk '{print $12 + $13}')"
    done
}
# Where the server's CPU per request went, by thread name (threads of one name added up), when it
# used more than one: the runtime, the queue's writer and applier.
thread_split() { # REQUESTS BEFORE AFTER CLK_TCK
    python3 - "$@" <<'EOF_SPLIT'
import collections, sys
n, before, after = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def per_name(text):
    totals = collections.Counter()
    for line in text.splitlines():
        name, _, ticks = line.rpartition(" ")
        if name and ticks.isdigit():
            totals[name] += int(ticks)
    return totals
hz = int(sys.argv[4])
delta = per_name(after) - per_name(before)
busy = [(name, ticks) for name, ticks in delta.most_common() if ticks > 0]
if n > 0 and len(busy) > 1:
    print("  CPU per request by thread: " + ", ".join(f"{name} {ticks / hz * 1e6 / n:.1f} us" for name, ticks in busy))
EOF_SPLIT
}
# One wrk run: LABEL URL CONNS LUA PID. Prints the RESULT line prefixed with the label, and the
# server's CPU time per request (user + system, all its threads, from /proc/PID/stat).
wrk_run() {
    local label="$1" url="$2" conns="$3" lua="$4" pid="$5"
    RUN=$((RUN + 1))
    local ticks0 threads0
    ticks0="$(cpu_ticks "$pid")"
    threads0="$(thread_ticks "$pid")"
    local cap=$((MAX_REQUESTS / WRK_THREADS))
    local out
    out="$(${WRK_CPUS:+taskset -c "$WRK_CPUS"} wrk -t"$WRK_THREADS" -c"$conns" -d"$DURATION" --timeout 10s -s "$lua" \
        "$url/webhooks/page_updated" -- "$RUN" "$cap")"
    echo "$out" >"$WORK/wrk-$RUN.txt"
    local ticks1 threads1 line
    ticks1="$(cpu_ticks "$pid")"
    threads1="$(thread_ticks "$pid")"
    line="$(grep '^RESULT' <<<"$out" | sed 's/^RESULT //')"
    line="$line cpu_us_per_req=$(awk -v t="$((ticks1 - ticks0))" -v hz="$CLK_TCK" -v n="$(field requests "$line")" \
        'BEGIN {printf "%.0f", t / hz * 1e6 / n}')"
    printf '%-22s c=%-3s %s  [load: %s]\n' "$label" "$conns" "$line" "$(cut -d' ' -f1-3 /proc/loadavg)"
    thread_split "$(field requests "$line")" "$threads0" "$threads1" "$CLK_TCK"
    grep '^FIRST_BAD' <<<"$out" || true
    local sent
    sent="$(field requests "$line")"
    if [ "$sent" -ge "$cap" ]; then
        echo "  (hit MAX_REQUESTS: its requests/s is understated; shorten DURATION)"
    fi
    LAST="$line"
}

ratio() { # CONNS FLOOR_LINE APP_LINE LABEL
    python3 - "$@" <<'EOF'
import re, sys
conns, floor, app, label = sys.argv[1], dict(re.findall(r"(\w+)=([\d.]+)", sys.argv[2])), dict(re.findall(r"(\w+)=([\d.]+)", sys.argv[3])), sys.argv[4]
f = lambda d, k: float(d[k])
print(f"  ratio {label}/floor at c={conns}: p50 x{f(app,'p50_us')/f(floor,'p50_us'):.1f}, p99 x{f(app,'p99_us')/f(floor,'p99_us'):.1f}, "
      f"throughput x{f(floor,'rps')/f(app,'rps'):.1f} lower, CPU per request x{f(app,'cpu_us_per_req')/max(f(floor,'cpu_us_per_req'),1):.1f}")
EOF
}

# Issue 19's bounds: throughput at least MIN of the floor's; at 50 connections, p99 at most 3x.
# Prints PASS or FAIL per bound (and counts the failures in VERDICT_FAILS).
VERDICT_FAILS=0
verdict() { # CONNS FLOOR_LINE APP_LINE LABEL MIN
    local out
    out="$(python3 - "$@" <<'EOF'
import re, sys
conns, floor, app, label, least = sys.argv[1], dict(re.findall(r"(\w+)=([\d.]+)", sys.argv[2])), dict(re.findall(r"(\w+)=([\d.]+)", sys.argv[3])), sys.argv[4], float(sys.argv[5])
share = float(app["rps"]) / float(floor["rps"])
print(f"  {'PASS' if share >= least else 'FAIL'}: {label} throughput {share:.2f} of the floor's at c={conns} (bound: {least})")
if conns == "50":
    times = float(app["p99_us"]) / float(floor["p99_us"])
    print(f"  {'PASS' if times <= 3 else 'FAIL'}: {label} p99 x{times:.2f} the floor's at c=50 (bound: x3)")
EOF
)"
    echo "$out"
    VERDICT_FAILS=$((VERDICT_FAILS + $(grep -c '^  FAIL' <<<"$out" || true)))
}

if wanted load; then
    wait_quiet
    say "load: $TENANTS tenants, $DURATION per run, wrk -t$WRK_THREADS"
    floor_port="$(free_port)"
    PORT="$floor_port" "$TARGET/hello-floor" >"$WORK/floor.log" 2>&1 &
    FLOOR_PID=$!
    PIDS+=("$FLOOR_PID")
    wait_http "http://127.0.0.1:$floor_port/"
    echo "floor pid $FLOOR_PID on port $floor_port; each app run below starts a fresh app on a fresh store"
    # The floor gets the same requests (its own copy of the script; it ignores what they say).
    "$TARGET/load-prep" --data-dir "$WORK/data-floor" --lua "$WORK/webhooks.lua" \
        --app-base-url "http://127.0.0.1:$floor_port" --tenants "$TENANTS" \
        --tenant-base-url "http://127.0.0.1:9/wiki"
    for conns in $CONN_LEVELS; do
        place_one_connection "$conns"
        # Each verdict compares an app run with the floor run just before it: on this VM a
        # minute's background activity moves the one-connection figures by a fifth (idle cores
        # wake slower than busy ones), and it moves the two runs of a pair together.
        wrk_run "floor (hello-floor)" "http://127.0.0.1:$floor_port" "$conns" "$WORK/webhooks.lua" "$FLOOR_PID"
        floor="$LAST"
        # The acknowledgement path: verified, tenant found (cached), rules matched, none applies.
        RULES="$NO_MATCH_RULES"
        start_app "$WORK/data-c$conns-ack" "$WORK/webhooks-c$conns-ack.lua"
        RULES="$MATCHING_RULES"
        wrk_run "app, no rule matches" "$APP_URL" "$conns" "$WORK/webhooks-c$conns-ack.lua" "$APP_PID"
        ack="$LAST"
        ratio "$conns" "$floor" "$ack" "ack path"
        verdict "$conns" "$floor" "$ack" "ack path" 0.8
        stop_pid "$APP_PID"
        wrk_run "floor (hello-floor)" "http://127.0.0.1:$floor_port" "$conns" "$WORK/webhooks.lua" "$FLOOR_PID"
        floor="$LAST"
        # The durable path alone: every event marked and queued before its 204, LOCAL_WORKER=off
        # so that no edit competes for the cores.
        start_app "$WORK/data-c$conns-off" "$WORK/webhooks-c$conns-off.lua" env LOCAL_WORKER=off
        wrk_run "app, queued, worker off" "$APP_URL" "$conns" "$WORK/webhooks-c$conns-off.lua" "$APP_PID"
        durable="$LAST"
        if [ "$(field requests "$durable")" -lt 10000 ]; then
            echo "  WARNING: fewer than 10 000 requests reached the app: raise DURATION" >&2
        fi
        ratio "$conns" "$floor" "$durable" "durable path"
        verdict "$conns" "$floor" "$durable" "durable path" 0.3
        echo "  app (worker off) peak memory after the load: VmHWM $(hwm "$APP_PID")"
        stop_pid "$APP_PID"
        # As run: the worker drains the queue meanwhile (every job fails at once on the closed
        # port and is dead-lettered: the busiest the worker can be), on the same two cores.
        start_app "$WORK/data-c$conns" "$WORK/webhooks-c$conns.lua"
        wrk_run "app, queued, worker on" "$APP_URL" "$conns" "$WORK/webhooks-c$conns.lua" "$APP_PID"
        ratio "$conns" "$floor" "$LAST" "as run"
        echo "  app peak memory after the load: VmHWM $(hwm "$APP_PID")"
        python3 - "$WORK/data-c$conns" <<'EOF' || true
import os, sys
d = sys.argv[1]
print("  data directory: " + ", ".join(f"{n} {os.path.getsize(os.path.join(d, n)) / 1048576:.1f} MiB" for n in sorted(os.listdir(d))))
EOF
        stop_pid "$APP_PID"
    done
    SERVER_CPUS="" WRK_CPUS=""
    echo "floor peak memory: VmHWM $(hwm "$FLOOR_PID")"
    # The app answers an accepted event only once it is on disk: what one durable write costs here.
    python3 - "$WORK" <<'EOF'
import os, statistics, sys, time
path = os.path.join(sys.argv[1], "fsync-probe")
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
samples = []
for i in range(500):
    start = time.perf_counter()
    os.pwrite(fd, b"x" * 4096, (i % 64) * 4096)
    os.fdatasync(fd)
    samples.append(time.perf_counter() - start)
os.close(fd)
os.unlink(path)
samples.sort()
print(f"one 4 KiB write + fdatasync in the data directory's file system: p50 {statistics.median(samples) * 1e6:.0f} us, "
      f"p99 {samples[int(len(samples) * 0.99)] * 1e6:.0f} us (500 samples)")
EOF
    stop_pid "$FLOOR_PID"
fi

if wanted memory; then
    say "memory: the app as run (worker on) under ${MEMORY_ROUNDS:-8} back-to-back 50-connection runs of $DURATION"
    start_app "$WORK/data-memory" "$WORK/webhooks-memory.lua"
    total=0
    for round in $(seq 1 "${MEMORY_ROUNDS:-8}"); do
        wrk_run "app, round $round" "$APP_URL" 50 "$WORK/webhooks-memory.lua" "$APP_PID" >/dev/null
        total=$((total + $(field requests "$LAST")))
        rss="$(awk '/^VmRSS/ {printf "%.1f MiB", $2/1024}' "/proc/$APP_PID/status")"
        echo "  after $total events: RSS $rss, peak $(hwm "$APP_PID")  [load: $(cut -d' ' -f1-3 /proc/loadavg)]"
    done
    python3 - "$WORK/data-memory" <<'EOF' || true
import os, sys
d = sys.argv[1]
print("  data directory: " + ", ".join(f"{n} {os.path.getsize(os.path.join(d, n)) / 1048576:.1f} MiB" for n in sorted(os.listdir(d))))
EOF
    stop_pid "$APP_PID"
fi

if wanted diag; then
    need strace
    say "diag: the same app with DATA_DIR on tmpfs (/dev/shm)"
    SHM="$(mktemp -d -p /dev/shm understudy-load.XXXXXX)"
    trap 'cleanup; rm -rf "$SHM"' EXIT
    start_app "$SHM/data" "$WORK/webhooks-shm.lua"
    for conns in $CONN_LEVELS; do
        wrk_run "app, DATA_DIR on tmpfs" "$APP_URL" "$conns" "$WORK/webhooks-shm.lua" "$APP_PID"
    done
    echo "app (tmpfs) peak memory: VmHWM $(hwm "$APP_PID")"
    stop_pid "$APP_PID"

    say "diag: the app with rules that match nothing (verify + tenant lookup + rule match; no mark, no enqueue)"
    RULES="$NO_MATCH_RULES"
    start_app "$WORK/data-nomatch" "$WORK/webhooks-nomatch.lua"
    RULES="$MATCHING_RULES"
    for conns in $CONN_LEVELS; do
        wrk_run "app, no rule matches" "$APP_URL" "$conns" "$WORK/webhooks-nomatch.lua" "$APP_PID"
    done
    stop_pid "$APP_PID"

    say "diag: fsync-family system calls per request (strace -f -c; slower, figures are counts only)"
    start_app "$WORK/data-strace" "$WORK/webhooks-strace.lua" \
        strace -f -c -e trace=fsync,fdatasync,sync_file_range,msync -o "$WORK/strace.txt"
    saved_duration="$DURATION"
    DURATION=10s
    wrk_run "app under strace" "$APP_URL" 50 "$WORK/webhooks-strace.lua" "$APP_PID"
    DURATION="$saved_duration"
    sleep 2 # let the worker catch up a little; what it commits is counted too
    # Stop the traced app itself (strace would only detach on SIGTERM), then strace prints.
    for child in $(pgrep -P "$APP_PID" || true); do kill "$child" 2>/dev/null || true; done
    wait "$APP_PID" 2>/dev/null || true
    cat "$WORK/strace.txt"
    echo "(requests sent: $(field requests "$LAST"); the worker's commits are included)"
fi

if wanted profile; then
    need perf
    say "profile: perf record of the app at ${PROFILE_CONNS:-50} connections, ${PROFILE_PATH:-durable} path"
    # PROFILE_PATH=ack: rules that match nothing (the acknowledgement path alone).
    [ "${PROFILE_PATH:-durable}" = ack ] && RULES="$NO_MATCH_RULES"
    start_app "$WORK/data-perf" "$WORK/webhooks-perf.lua" env LOCAL_WORKER=off
    RULES="$MATCHING_RULES"
    perf record -F 999 -g -o "$WORK/perf.data" -p "$APP_PID" >/dev/null 2>&1 &
    PERF_PID=$!
    wrk_run "app under perf" "$APP_URL" "${PROFILE_CONNS:-50}" "$WORK/webhooks-perf.lua" "$APP_PID"
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    stop_pid "$APP_PID"
    PERF_DATA="${PERF_DATA:-/tmp/understudy-perf.data}"
    cp "$WORK/perf.data" "$PERF_DATA"
    # (head closes the pipe early: pipefail must not end the script for that)
    top() { grep -E '^ +[0-9.]+%' | sed -E 's/ +- +- *$//' | cut -c1-160 | head -"$1" || true; }
    echo "-- by thread"
    perf report -i "$PERF_DATA" --no-children --sort comm --stdio 2>/dev/null | top 10
    echo "-- by function, self time"
    perf report -i "$PERF_DATA" --no-children --sort symbol --stdio 2>/dev/null | top 40
    echo "-- by function, with callees"
    perf report -i "$PERF_DATA" --children --sort symbol --stdio -g none 2>/dev/null | top 60
    echo "(perf data kept in $PERF_DATA for perf report)"
fi

SOAK_RC=0
if wanted soak; then
    say "soak: ${SOAK_SECONDS:-600} s at half the measured throughput (tests/load/src/bin/soak.rs)"
    SOAK_APP_BIN="$TARGET/understudy" "$TARGET/soak" || SOAK_RC=$?
    [ "$SOAK_RC" -eq 0 ] || echo "soak: FAILED (exit $SOAK_RC)" >&2
fi

if wanted coldstart; then
    say "coldstart: Lambda binaries against a fake Runtime API ($COLD_RUNS runs each)"
    python3 tests/load/coldstart.py lambda --bindir "$TARGET" --runs "$COLD_RUNS"
    say "coldstart: the local app"
    python3 tests/load/coldstart.py local --bin "$TARGET/understudy" --runs "$COLD_RUNS"
fi

if wanted bench; then
    need node
    need npm
    say "bench: cargo bench -p connect-auth"
    cargo bench -p connect-auth
    say "bench: node tests/interop/bench.js"
    if [ ! -d tests/interop/node_modules/atlassian-jwt ]; then
        (cd tests/interop && npm ci --no-audit --no-fund)
    fi
    node tests/interop/bench.js
    say "bench: cargo bench -p understudy-store --bench store"
    cargo bench -p understudy-store --bench store
fi
say "done"
if [ "$VERDICT_FAILS" -gt 0 ]; then
    echo "load: $VERDICT_FAILS bound(s) of issue 19 not met (FAIL lines above)" >&2
fi
[ "$SOAK_RC" -ne 0 ] && exit "$SOAK_RC"
[ "$VERDICT_FAILS" -eq 0 ]
