#!/usr/bin/env bash
# Measures cohost and llama.cpp's llama-server on the same GGUF, one server at a time, with the
# same client (`cohost bench`), and writes a markdown table with ratios (cohost / llama-server).
#
#   scripts/side-by-side.sh [MODEL.gguf] [OUT_DIR]
#
# Environment (defaults in brackets):
#   LLAMA_SERVER  llama-server binary [$HOME/llama-anchor/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-server]
#   COHOST_BIN    cohost binary [target/release/cohost, built with `cargo build --release -p cohost` unless SKIP_BUILD=1]
#   CONCURRENCY   levels of the sweep [1,4,8,16]      MAX_TOKENS   output tokens per request [256]
#   LONG_PROMPT   tokens of the prefill/TTFT prompt, 0 to skip [1000]
#   LONG_ROUNDS   requests in the long-prompt run [3] ROUNDS       batches per sweep level [1]
#   THREADS       compute threads of both servers [2] SLOTS        concurrent sequences of both [16]
#   CTX           llama-server's total context (-c) [8192]
#   SPEC_SETS     prompt sets for speculative decoding, one stream at a time, comma-separated,
#                 "" to skip [rewrite,quote]: llama-server, cohost, and cohost --draft-tokens
#   DRAFT_TOKENS  cohost's --draft-tokens in that run [8]   SPEC_ROUNDS requests per set [3]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODEL=${1:-$ROOT/models/cache/SmolLM2-135M-Instruct.Q4_1.gguf}
OUT=${2:-$ROOT/target/side-by-side/$(date -u +%Y%m%d-%H%M%S)}
LLAMA_SERVER=${LLAMA_SERVER:-$HOME/llama-anchor/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-server}
CONCURRENCY=${CONCURRENCY:-1,4,8,16}
MAX_TOKENS=${MAX_TOKENS:-256}
LONG_PROMPT=${LONG_PROMPT:-1000}
LONG_ROUNDS=${LONG_ROUNDS:-3}
ROUNDS=${ROUNDS:-1}
THREADS=${THREADS:-2}
SLOTS=${SLOTS:-16}
CTX=${CTX:-8192}
SPEC_SETS=${SPEC_SETS-rewrite,quote}
DRAFT_TOKENS=${DRAFT_TOKENS:-8}
SPEC_ROUNDS=${SPEC_ROUNDS:-3}
IFS=, read -r -a spec_sets <<<"$SPEC_SETS"

[[ -f $MODEL ]] || { echo "no model at $MODEL" >&2; exit 1; }
[[ -x $LLAMA_SERVER ]] || { echo "no llama-server at $LLAMA_SERVER (set LLAMA_SERVER)" >&2; exit 1; }
if [[ -z ${COHOST_BIN:-} ]]; then
    COHOST_BIN=$ROOT/target/release/cohost
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        (cd "$ROOT" && cargo build --release -p cohost)
    fi
fi
[[ -x $COHOST_BIN ]] || { echo "no cohost binary at $COHOST_BIN" >&2; exit 1; }
mkdir -p "$OUT"

# shellcheck source=scripts/server-run.sh
source "$ROOT/scripts/server-run.sh"

bench() { # LABEL API PORT REPORT_NAME [extra bench flags...]
    local label=$1 api=$2 port=$3 name=$4
    shift 4
    "$COHOST_BIN" bench --url "http://127.0.0.1:$port" --api "$api" --label "$label" \
        --max-tokens "${BENCH_MAX_TOKENS:-$MAX_TOKENS}" --wait-ready 300 --out "$OUT/$name.json" "$@" \
        | tee "$OUT/$name.txt"
}

sweep_flags=(--concurrency "$CONCURRENCY" --rounds "$ROUNDS")
long_flags=(--concurrency 1 --rounds "$LONG_ROUNDS" --prompt-tokens "$LONG_PROMPT")

echo "== llama-server (-c $CTX -np $SLOTS -t $THREADS)"
port=$(free_port)
"$LLAMA_SERVER" -m "$MODEL" -c "$CTX" -np "$SLOTS" -t "$THREADS" --host 127.0.0.1 --port "$port" \
    >"$OUT/llama-server.log" 2>&1 &
SERVER_PID=$!
bench llama-server llama "$port" llama-sweep "${sweep_flags[@]}"
for set in "${spec_sets[@]}"; do
    bench llama-server llama "$port" "llama-$set" --concurrency 1 --rounds "$SPEC_ROUNDS" --prompt-set "$set"
done
LLAMA_RSS=$(peak_rss_mb)
stop_server
LLAMA_LONG_RSS=-
if [[ $LONG_PROMPT -gt 0 ]]; then
    # With $SLOTS slots each slot holds CTX/SLOTS tokens, too few for the long prompt: one slot
    # holding the whole context measures the same prefill.
    echo "== llama-server, long prompt (-c $CTX -np 1 -t $THREADS)"
    port=$(free_port)
    "$LLAMA_SERVER" -m "$MODEL" -c "$CTX" -np 1 -t "$THREADS" --host 127.0.0.1 --port "$port" \
        >"$OUT/llama-server-long.log" 2>&1 &
    SERVER_PID=$!
    BENCH_MAX_TOKENS=16 bench llama-server llama "$port" llama-long "${long_flags[@]}"
    LLAMA_LONG_RSS=$(peak_rss_mb)
    stop_server
fi

echo "== cohost (--max-concurrent $SLOTS --threads $THREADS)"
port=$(free_port)
"$COHOST_BIN" serve --model "$MODEL" --port "$port" --max-concurrent "$SLOTS" --threads "$THREADS" \
    >"$OUT/cohost.log" 2>&1 &
SERVER_PID=$!
bench cohost cohere "$port" cohost-sweep "${sweep_flags[@]}"
COHOST_RSS=$(peak_rss_mb)
COHOST_LONG_RSS=-
if [[ $LONG_PROMPT -gt 0 ]]; then
    BENCH_MAX_TOKENS=16 bench cohost cohere "$port" cohost-long "${long_flags[@]}"
    COHOST_LONG_RSS=$(peak_rss_mb)
fi
for set in "${spec_sets[@]}"; do
    bench cohost cohere "$port" "cohost-$set" --concurrency 1 --rounds "$SPEC_ROUNDS" --prompt-set "$set"
done
stop_server

if [[ ${#spec_sets[@]} -gt 0 ]]; then
    echo "== cohost --draft-tokens $DRAFT_TOKENS"
    port=$(free_port)
    "$COHOST_BIN" serve --model "$MODEL" --port "$port" --max-concurrent "$SLOTS" --threads "$THREADS" \
        --draft-tokens "$DRAFT_TOKENS" >"$OUT/cohost-draft.log" 2>&1 &
    SERVER_PID=$!
    for set in "${spec_sets[@]}"; do
        bench "cohost-draft-$DRAFT_TOKENS" cohere "$port" "draft-$set" --concurrency 1 --rounds "$SPEC_ROUNDS" --prompt-set "$set"
    done
    # What the drafts came to, over every set.
    curl -s "http://127.0.0.1:$port/metrics" | grep '^cohost_draft' >"$OUT/draft-metrics.txt" || true
    stop_server
    for set in "${spec_sets[@]}"; do
        "$COHOST_BIN" bench --compare "$OUT/llama-$set.json" --compare "$OUT/cohost-$set.json" \
            --compare "$OUT/draft-$set.json" --markdown "$OUT/spec-$set.md" >/dev/null
    done
fi

"$COHOST_BIN" bench --compare "$OUT/llama-sweep.json" --compare "$OUT/cohost-sweep.json" \
    --markdown "$OUT/sweep.md" --svg "$OUT/sweep.svg" >/dev/null
if [[ $LONG_PROMPT -gt 0 ]]; then
    "$COHOST_BIN" bench --compare "$OUT/llama-long.json" --compare "$OUT/cohost-long.json" \
        --markdown "$OUT/long.md" >/dev/null
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "-" }'; }
{
    echo "# cohost vs llama-server, side by side"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), model $(basename "$MODEL"),"
    echo "$(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $THREADS threads each, $SLOTS slots each."
    echo "Ratios: throughput cohost / llama-server; latency llama-server / cohost (above 1: cohost better)."
    echo
    echo "## Sweep ($MAX_TOKENS greedy tokens per request, short distinct prompts)"
    echo
    cat "$OUT/sweep.md"
    if [[ $LONG_PROMPT -gt 0 ]]; then
        echo
        echo "## ~$LONG_PROMPT-token prompt, one request at a time (TTFT = prefill)"
        echo
        cat "$OUT/long.md"
    fi
    for set in "${spec_sets[@]}"; do
        echo
        echo "## Prompt set $set, one stream ($SPEC_ROUNDS requests; cohost with and without --draft-tokens $DRAFT_TOKENS)"
        echo
        cat "$OUT/spec-$set.md"
    done
    if [[ -s $OUT/draft-metrics.txt ]]; then
        echo
        echo "Drafts over the --draft-tokens run:"
        echo
        sed 's/^/    /' "$OUT/draft-metrics.txt"
    fi
    echo
    echo "## Peak RSS (VmHWM, MB)"
    echo
    echo "| run | llama-server | cohost | llama-server / cohost |"
    echo "|---|---|---|---|"
    echo "| after the sweep | $LLAMA_RSS | $COHOST_RSS | $(ratio "$LLAMA_RSS" "$COHOST_RSS") |"
    echo "| after the long prompt | $LLAMA_LONG_RSS (own instance, -np 1) | $COHOST_LONG_RSS | $(ratio "$LLAMA_LONG_RSS" "$COHOST_LONG_RSS") |"
    echo
    echo "Chart: sweep.svg. Raw reports and server logs: $OUT"
} >"$OUT/side-by-side.md"
echo
cat "$OUT/side-by-side.md"
