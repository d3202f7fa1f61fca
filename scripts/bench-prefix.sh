#!/usr/bin/env bash
# The prompt-cache workloads of `cohost bench` (multi-turn, round-robin, shared-prefix) side by
# side: llama.cpp's llama-server (cache_prompt on, its default), cohost with its prefix cache and
# cohost without it, one server at a time on the same GGUF, the same client for all. Every run
# gets a freshly started server, so each starts with a cold cache; the runs of the three servers
# are interleaved (run 1 of each, then run 2 of each...) so that a noisy stretch of the machine
# does not land on one server only. Each figure is the median of the runs; one markdown table
# per workload with ratios (cohost without the cache / cohost with it, llama-server / cohost
# with it: above 1, the cache or cohost is faster), and each server's peak RSS.
#
#   scripts/bench-prefix.sh [COHOST_BIN] [LLAMA_SERVER] [MODEL.gguf] [OUT_DIR]
#
# Arguments, else environment (defaults in brackets):
#   COHOST_BIN    the cohost binary [$CARGO_TARGET_DIR/release/cohost, else target/release/cohost]
#   LLAMA_SERVER  llama-server [$HOME/llama-anchor/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-server]
#   MODEL         the GGUF both serve [models/cache/SmolLM2-135M-Instruct.Q4_1.gguf]
#   OUT_DIR       reports, server logs and summary.md [target/bench-prefix/<UTC time>]
# Environment:
#   WORKLOADS     comma-separated [multi-turn,round-robin,shared-prefix]
#   SERVERS       comma-separated, first = the base of the ratios [cached,uncached,llama]
#                 (cached: cohost serve; uncached: cohost serve --prefix-cache false; llama)
#   RUNS          runs per server and workload [3]
#   THREADS [2]   SLOTS: llama-server -np and cohost --max-concurrent [16]
#   CTX           llama-server's -c, the KV cells all its slots share (-kvu) [32768]: the
#                 workloads hold up to 16 sequences of ~1,300-2,000 tokens at once (shared-prefix
#                 ~25,000 cells, round-robin ~22,000, multi-turn ~16,500), and when the shared
#                 cells run out llama-server fails every request in flight ("Context size has
#                 been exceeded."), so 16384 is too few
#   MULTI_TURN_ARGS, ROUND_ROBIN_ARGS, SHARED_PREFIX_ARGS
#                 extra `cohost bench` flags for that workload, e.g. smaller sizes for a quick
#                 try: MULTI_TURN_ARGS="--conversations 2 --turns 2"
#   BENCH_ARGS    extra `cohost bench` flags for every workload (e.g. "--max-tokens 16")
#
# The machine should be quiet while it runs: the figures are latencies on shared cores. A full
# run (3 workloads x 3 servers x 3 runs) is about 2 hours on a 2-core Zen 1 machine, whose
# prefill is ~220 tokens/s for cohost and ~120 for llama-server: one pass of the three workloads
# is ~240,000 prompt tokens without a prefix cache (multi-turn 57,000, round-robin 107,000,
# shared-prefix 74,000), a fraction of that with one.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
COHOST_BIN=${1:-${COHOST_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/cohost}}
LLAMA_SERVER=${2:-${LLAMA_SERVER:-$HOME/llama-anchor/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-server}}
MODEL=${3:-${MODEL:-$ROOT/models/cache/SmolLM2-135M-Instruct.Q4_1.gguf}}
OUT=${4:-${OUT_DIR:-$ROOT/target/bench-prefix/$(date -u +%Y%m%d-%H%M%S)}}
WORKLOADS=${WORKLOADS:-multi-turn,round-robin,shared-prefix}
SERVERS=${SERVERS:-cached,uncached,llama}
RUNS=${RUNS:-3}
THREADS=${THREADS:-2}
SLOTS=${SLOTS:-16}
CTX=${CTX:-32768}

[[ -x $COHOST_BIN ]] || { echo "no cohost binary at $COHOST_BIN (cargo build --release)" >&2; exit 1; }
[[ -f $MODEL ]] || { echo "no model at $MODEL (models/fetch-default.sh)" >&2; exit 1; }
IFS=, read -ra workloads <<<"$WORKLOADS"
IFS=, read -ra servers <<<"$SERVERS"
for w in "${workloads[@]}"; do
    case $w in
        multi-turn | round-robin | shared-prefix) ;;
        *) echo "unknown workload '$w' in WORKLOADS (multi-turn, round-robin, shared-prefix)" >&2; exit 1 ;;
    esac
done
for s in "${servers[@]}"; do
    case $s in
        cached | uncached) ;;
        llama) [[ -x $LLAMA_SERVER ]] || { echo "no llama-server at $LLAMA_SERVER" >&2; exit 1; } ;;
        *) echo "unknown server '$s' in SERVERS (cached, uncached, llama)" >&2; exit 1 ;;
    esac
done
if [[ ",$SERVERS," == *,uncached,* ]] && ! "$COHOST_BIN" serve --help | grep -q -- '--prefix-cache'; then
    echo "$COHOST_BIN has no --prefix-cache flag: leave 'uncached' out of SERVERS (its 'cached' run is then cohost as it is)" >&2
    exit 1
fi
mkdir -p "$OUT"

# shellcheck source=scripts/server-run.sh
source "$ROOT/scripts/server-run.sh"

label_of() { # SERVER
    case $1 in
        cached) echo "cohost" ;;
        uncached) echo "cohost-no-cache" ;;
        llama) echo "llama-server" ;;
    esac
}

start_server() { # SERVER PORT LOG
    local server=$1 port=$2 log=$3
    case $server in
        llama)
            "$LLAMA_SERVER" -m "$MODEL" -c "$CTX" -np "$SLOTS" -kvu -t "$THREADS" \
                --host 127.0.0.1 --port "$port" >"$log" 2>&1 &
            ;;
        cached)
            "$COHOST_BIN" serve --model "$MODEL" --port "$port" --max-concurrent "$SLOTS" \
                --threads "$THREADS" >"$log" 2>&1 &
            ;;
        uncached)
            "$COHOST_BIN" serve --model "$MODEL" --port "$port" --max-concurrent "$SLOTS" \
                --threads "$THREADS" --prefix-cache false >"$log" 2>&1 &
            ;;
    esac
    SERVER_PID=$!
}

workload_args() { # WORKLOAD
    case $1 in
        multi-turn) echo "${MULTI_TURN_ARGS:-}" ;;
        round-robin) echo "${ROUND_ROBIN_ARGS:-}" ;;
        shared-prefix) echo "${SHARED_PREFIX_ARGS:-}" ;;
    esac
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

started=$SECONDS
for workload in "${workloads[@]}"; do
    # The extra flags are split into words on purpose.
    read -ra extra <<<"$(workload_args "$workload") ${BENCH_ARGS:-}"
    for run in $(seq 1 "$RUNS"); do
        for server in "${servers[@]}"; do
            label=$(label_of "$server")
            name=$workload-$server-$run
            api=cohere
            [[ $server == llama ]] && api=llama
            echo "== $workload, $label, run $run of $RUNS ($((SECONDS - started)) s so far)" >&2
            port=$(free_port)
            start_server "$server" "$port" "$OUT/$name.log"
            "$COHOST_BIN" bench --workload "$workload" --api "$api" --label "$label" \
                --url "http://127.0.0.1:$port" --wait-ready 300 --out "$OUT/$name.json" \
                "${extra[@]}" >"$OUT/$name.txt"
            cat "$OUT/$name.txt"
            # Peak resident memory of the server over the run, just before it stops.
            peak_rss_mb >"$OUT/$name.rss"
            stop_server
        done
    done
    compare=()
    for server in "${servers[@]}"; do
        for run in $(seq 1 "$RUNS"); do
            compare+=(--compare "$OUT/$workload-$server-$run.json")
        done
    done
    "$COHOST_BIN" bench "${compare[@]}" --markdown "$OUT/$workload.md" >/dev/null
done

{
    echo "# Prompt-cache workloads, side by side"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), model $(basename "$MODEL"),"
    echo "$(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $THREADS threads and $SLOTS slots each;"
    echo "llama-server -c $CTX -np $SLOTS -kvu -t $THREADS (cache_prompt on); a fresh server for each run, median of $RUNS runs."
    for workload in "${workloads[@]}"; do
        echo
        echo "## $workload"
        echo
        cat "$OUT/$workload.md"
    done
    echo
    echo "## Peak RSS (VmHWM at the end of each run, MB, median of $RUNS)"
    echo
    header="| workload |"
    rule="|---|"
    for server in "${servers[@]}"; do
        header+=" $(label_of "$server") |"
        rule+="---|"
    done
    echo "$header"
    echo "$rule"
    for workload in "${workloads[@]}"; do
        row="| $workload |"
        for server in "${servers[@]}"; do
            row+=" $(cat "$OUT/$workload-$server"-*.rss | median) |"
        done
        echo "$row"
    done
    echo
    echo "Took $((SECONDS - started)) s. Raw reports, tables and server logs: $OUT"
} >"$OUT/summary.md"
echo
cat "$OUT/summary.md"
