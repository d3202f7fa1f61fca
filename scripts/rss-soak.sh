#!/usr/bin/env bash
# Memory over a long mixed run: one `cohost serve` with a KV budget, 2,000 requests (by default)
# of mixed lengths sent by `cohost bench` in cycles, and the server's peak resident memory
# (VmHWM) against what it should stay within: the weights, the KV budget and a fixed overhead.
# A cycle is 200 requests, every prompt distinct (so the pool fills, evicts and reuses):
#   64 short questions, 64 prompts of ~150 tokens, 32 of ~600 (16 at a time each), and a
#   multi-turn run of 8 conversations x 5 turns of ~100 tokens (whose histories hit the cache).
#
#   scripts/rss-soak.sh [COHOST_BIN] [MODEL.gguf] [OUT_DIR]
#
# Environment: KV_MB, the --kv-cache-mb budget [256: small enough that the run fills it many
# times over]; CYCLES [10]; MAX_TOKENS per request [16]; THREADS [2].
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
COHOST_BIN=${1:-${COHOST_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/cohost}}
MODEL=${2:-${MODEL:-$ROOT/models/cache/SmolLM2-135M-Instruct.Q4_1.gguf}}
OUT=${3:-${OUT_DIR:-$ROOT/target/rss-soak/$(date -u +%Y%m%d-%H%M%S)}}
KV_MB=${KV_MB:-256}
CYCLES=${CYCLES:-10}
MAX_TOKENS=${MAX_TOKENS:-16}
THREADS=${THREADS:-2}

[[ -x $COHOST_BIN ]] || { echo "no cohost binary at $COHOST_BIN (cargo build --release)" >&2; exit 1; }
[[ -f $MODEL ]] || { echo "no model at $MODEL (models/fetch-default.sh)" >&2; exit 1; }
mkdir -p "$OUT"

# shellcheck source=scripts/server-run.sh
source "$ROOT/scripts/server-run.sh"

port=$(free_port)
url=http://127.0.0.1:$port
"$COHOST_BIN" serve --model "$MODEL" --port "$port" --threads "$THREADS" --kv-cache-mb "$KV_MB" \
    >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
echo "cohost serve (pid $SERVER_PID) on $url, --kv-cache-mb $KV_MB; log in $OUT/server.log"

# The resident memory once a second, for the curve.
(while kill -0 "$SERVER_PID" 2>/dev/null; do
    awk -v t="$(date +%s)" '/^VmRSS:/ { printf "%s %.0f\n", t, $2 / 1024 }' "/proc/$SERVER_PID/status" 2>/dev/null || true
    sleep 1
done) >"$OUT/rss.txt" &
sampler=$!

bench() { # ARGS...: one `cohost bench` run; its requests counted from its report
    "$COHOST_BIN" bench --url "$url" --warmup 0 --max-tokens "$MAX_TOKENS" "$@" >>"$OUT/bench.log" 2>&1
}

start=$(date +%s)
for cycle in $(seq 1 "$CYCLES"); do
    bench --concurrency 16 --rounds 4
    bench --concurrency 16 --rounds 4 --prompt-tokens 150
    bench --concurrency 16 --rounds 2 --prompt-tokens 600
    bench --workload multi-turn --conversations 8 --turns 5 --prompt-tokens 100
    echo "cycle $cycle of $CYCLES: $((cycle * 200)) requests, $(($(date +%s) - start)) s, peak RSS $(peak_rss_mb) MB"
done

peak=$(peak_rss_mb)
kill "$sampler" 2>/dev/null || true
# Requests the server answered, and the errors the bench saw (the log has one line per chat).
answered=$(grep -c 'server::chat: chat id=.* status=200' "$OUT/server.log" || true)
failed=$(grep -c 'status=[45]' "$OUT/server.log" || true)
weights_mb=$(($(stat -c %s "$MODEL") / 1000000))
kv_line=$(grep -m1 'KV cache:' "$OUT/server.log" | sed 's/.*KV cache: //')
{
    echo "# RSS soak, $(date -u +%F)"
    echo
    echo "- $COHOST_BIN serve --kv-cache-mb $KV_MB --threads $THREADS, model $(basename "$MODEL")"
    echo "- KV cache: $kv_line"
    echo "- requests answered 200: $answered; 4xx/5xx: $failed; $(($(date +%s) - start)) s"
    echo "- weights file: $weights_mb MB; peak RSS (VmHWM): $peak MB;" \
        "peak - weights - budget: $((peak - weights_mb - KV_MB * 1048576 / 1000000)) MB"
} | tee "$OUT/summary.md"
