#!/usr/bin/env bash
# Upload benchmark over loopback: the agent's upload path (examples/upload_bench,
# typed client + streamed parts, 4 in flight) against `curl --upload-file` of the
# same bytes, each into a `spatialgen-sync sandbox` started as its own process.
#
#   scripts/bench-upload.sh            # 2 GiB file, 100 MiB parts, 4 in flight
#   SIZE_MIB=512 IN_FLIGHT=2 CHUNK=262144 scripts/bench-upload.sh
#   BENCH_DIR=/tmp/keep scripts/bench-upload.sh   # keep (and reuse) the generated file
#
# Prints the agent's time with MD5 verification on and off, curl's time, their
# ratio, and the agent's peak RSS (from /usr/bin/time -v when present, else the
# process's own VmHWM). Targets: agent <= 1.1 x curl; peak RSS <= 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-2048}
PART_SIZE=${PART_SIZE:-104857600}
IN_FLIGHT=${IN_FLIGHT:-4}
CHUNK=${CHUNK:-1048576}
RUNS=${RUNS:-3}
KEEP=${BENCH_DIR:+1}
WORK=${BENCH_DIR:-$(mktemp -d /tmp/spatialgen-bench.XXXXXX)}
mkdir -p "$WORK"
# What the sandboxes store goes to tmpfs when there is one, so that the disk
# does not set the pace; SANDBOX_DATA=DIR puts it elsewhere.
if [ -n "${SANDBOX_DATA:-}" ]; then
    DATA=$(mktemp -d "$SANDBOX_DATA/spatialgen-bench-data.XXXXXX")
elif [ -d /dev/shm ] && [ -w /dev/shm ]; then
    DATA=$(mktemp -d /dev/shm/spatialgen-bench-data.XXXXXX)
else
    DATA=$(mktemp -d "$WORK/sandbox-data.XXXXXX")
fi
export SPATIALGEN_API_KEY=bench-key

cargo build --release --locked --quiet --bin spatialgen-sync --example upload_bench
BIN=target/release/spatialgen-sync
EX=target/release/examples/upload_bench

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"/sandbox-*.log "$DATA"
    if [ -z "$KEEP" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

FILE="$WORK/bench.mov"
BYTES=$((SIZE_MIB * 1024 * 1024))
if [ ! -f "$FILE" ] || [ "$(stat -c %s "$FILE")" -ne "$BYTES" ]; then
    echo "generating $SIZE_MIB MiB of random bytes in $FILE"
    head -c "$BYTES" /dev/urandom > "$FILE"
fi
cat "$FILE" > /dev/null # both runs read from the page cache

# start_sandbox NAME PART_SIZE: start a sandbox on a free port; its endpoint
# goes to SANDBOX_URL. Not called in $(...): the pid must reach PIDS in this
# shell, or the sandboxes outlive the script.
start_sandbox() {
    local name=$1 part=$2 log="$WORK/sandbox-$1.log"
    "$BIN" sandbox --listen 127.0.0.1:0 --data "$DATA/$name" --part-size "$part" > "$log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        local url
        url=$(sed -n 's/^ *endpoint: *//p' "$log")
        if [ -n "$url" ]; then SANDBOX_URL=$url; return; fi
        sleep 0.1
    done
    echo "sandbox $name did not start:" >&2
    cat "$log" >&2
    exit 1
}

start_sandbox agent "$PART_SIZE"
AGENT_API=$SANDBOX_URL
start_sandbox curl $((BYTES + 1)) # one part: a single presigned URL for the whole file
CURL_API=$SANDBOX_URL

now() { date +%s.%N; }

# agent RUN_ARGS...: run the upload under /usr/bin/time -v; sets AGENT_OUT and PEAK_KIB.
agent() {
    local out="$WORK/agent.out" tv="$WORK/agent.time"
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -v "$EX" upload --endpoint "$AGENT_API" --file "$FILE" --in-flight "$IN_FLIGHT" --chunk "$CHUNK" "$@" > "$out" 2> "$tv"
        PEAK_KIB=$(sed -n 's/.*Maximum resident set size (kbytes): *//p' "$tv")
    else
        "$EX" upload --endpoint "$AGENT_API" --file "$FILE" --in-flight "$IN_FLIGHT" --chunk "$CHUNK" "$@" > "$out"
        PEAK_KIB=$(sed -n 's/^peak_rss_kib=//p' "$out")
    fi
    AGENT_OUT=$(cat "$out")
    rm -rf "$DATA"/agent/library/*
}

# upload_cmd: the real one-shot command (`spatialgen-sync upload`: grouping,
# journal, engine, 4 parts in flight) on a folder holding the file; a fresh
# journal each time. Sets CMD_SECS and CMD_PEAK_KIB.
upload_cmd() {
    local dir="$WORK/cmd" tv="$WORK/cmd.time"
    rm -rf "$dir"; mkdir -p "$dir/export"
    ln "$FILE" "$dir/export/bench.mov" 2>/dev/null || cp "$FILE" "$dir/export/bench.mov"
    printf '[api]\nendpoint = "%s"\n[journal]\npath = "%s/journal.sqlite3"\n[upload]\nmax_parts_in_flight = %s\n' \
        "$AGENT_API" "$dir" "$IN_FLIGHT" > "$dir/config.toml"
    local t0 t1
    t0=$(now)
    /usr/bin/time -v "$BIN" upload --config "$dir/config.toml" --layout 2D "$dir/export" > /dev/null 2> "$tv"
    t1=$(now)
    CMD_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
    CMD_PEAK_KIB=$(sed -n 's/.*Maximum resident set size (kbytes): *//p' "$tv")
    rm -rf "$DATA"/agent/library/*
}

secs_of() { sed -n 's/.*total_seconds=\([0-9.]*\).*/\1/p' <<< "$1"; }
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b < a) ? b : a }'; }
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b > a) ? b : a }'; }

# Rounds interleave the three uploads so that load from elsewhere hits them
# alike; the best time of each is reported, and the highest peak RSS.
V="" P="" CURL_SECS="" VERIFY_PEAK="" PLAIN_PEAK="" U="" U_PEAK=""
for round in $(seq "$RUNS"); do
    upload_cmd
    U=$(min "$U" "$CMD_SECS")
    U_PEAK=$(max "$U_PEAK" "$CMD_PEAK_KIB")
    agent
    V=$(min "$V" "$(secs_of "$AGENT_OUT")")
    VERIFY_PEAK=$(max "$VERIFY_PEAK" "$PEAK_KIB")
    agent --no-verify
    P=$(min "$P" "$(secs_of "$AGENT_OUT")")
    PLAIN_PEAK=$(max "$PLAIN_PEAK" "$PEAK_KIB")

    read -r SESSION UPLOAD URL < <("$EX" presign --endpoint "$CURL_API" --file "$FILE")
    T0=$(now)
    curl --silent --show-error --fail --upload-file "$FILE" --output /dev/null "$URL"
    T1=$(now)
    "$EX" complete --endpoint "$CURL_API" --session "$SESSION" --upload "$UPLOAD" > /dev/null
    rm -rf "$DATA"/curl/library/*
    C=$(awk -v a="$T0" -v b="$T1" 'BEGIN { print b - a }')
    CURL_SECS=$(min "$CURL_SECS" "$C")
    echo "round $round: agent $(secs_of "$AGENT_OUT") s (no MD5), curl $C s" >&2
done

echo
echo "upload of $SIZE_MIB MiB over loopback into $DATA, $((PART_SIZE / 1048576)) MiB parts, $IN_FLIGHT in flight, $((CHUNK / 1024)) KiB reads ($(nproc) cores)"
line() { awk -v s="$2" -v k="$3" -v c="$CURL_SECS" -v l="$1" \
    'BEGIN { printf "  %-20s: %6.3f s  peak RSS %5.1f MiB  (%.2f x curl)\n", l, s, k / 1024, s / c }'; }
line "upload command" "$U" "$U_PEAK"
line "agent, MD5 verified" "$V" "$VERIFY_PEAK"
line "agent, no MD5" "$P" "$PLAIN_PEAK"
printf '  curl --upload-file  : %6.3f s  (one PUT of the whole file)\n' "$CURL_SECS"
echo "  best of $RUNS interleaved rounds; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "  'upload command' is the whole process (start, grouping, journal, MD5-verified parts, complete, exit);"
echo "  the other agent rows run from create group to the last complete; curl's is the PUT alone."
