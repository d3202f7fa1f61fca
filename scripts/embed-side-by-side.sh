#!/usr/bin/env bash
# Embedding throughput of cohost's encoder, sentence-transformers (PyTorch, CPU) and ONNX Runtime
# (CPU) on the same model, texts, thread count and machine, measured in one run with their rounds interleaved, plus
# the cosine between the two sides' vectors. Writes a markdown table.
#
#   scripts/embed-side-by-side.sh [MODEL_DIR] [OUT_DIR]
#
# Environment (defaults in brackets):
#   ST_PYTHON  a Python with the pinned packages of crates/encoder/tests/golden-gen/requirements.txt
#              [a venv made once under $TARGET/embed-bench-venv]
#   THREADS [2]  ROUNDS per side [5]  TEXTS number of bench texts [1024]  BATCH texts per call [32]
#   ORT [1]    also run ONNX Runtime (0: sentence-transformers only)
#   PRECISIONS cohost's encoder precisions to run, comma-separated [f32,bf16] (bf16 without AMX
#              runs a slow portable path)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
MODEL=${1:-$ROOT/models/cache/all-MiniLM-L6-v2}
OUT=${2:-$TARGET/embed-side-by-side/$(date -u +%Y%m%d-%H%M%S)}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-5}
TEXTS=${TEXTS:-1024}
BATCH=${BATCH:-32}
PRECISIONS=${PRECISIONS:-f32,bf16}
ORT=${ORT:-1}

[[ -d $MODEL ]] || "$ROOT/models/fetch-minilm.sh" >/dev/null
if [[ -z ${ST_PYTHON:-} ]]; then
    venv=$TARGET/embed-bench-venv
    [[ -x $venv/bin/python ]] || python3 -m venv "$venv"
    # Quick when everything is there; brings an older venv up to the pins.
    "$venv/bin/pip" install --quiet -r "$ROOT/crates/encoder/tests/golden-gen/requirements.txt"

    ST_PYTHON=$venv/bin/python
fi
(cd "$ROOT" && cargo build --release --quiet -p encoder --example embed_bench)
BENCH=$TARGET/release/examples/embed_bench
mkdir -p "$OUT"
PY="$ST_PYTHON $ROOT/scripts/embed_bench_st.py"
$PY texts "$MODEL" "$OUT/texts.txt" "$TEXTS"
: >"$OUT/results.jsonl"
# One round of each side at a time, alternating, so both see the same machine load.
for r in $(seq "$ROUNDS"); do
    for p in ${PRECISIONS//,/ }; do
        "$BENCH" --model "$MODEL" --texts "$OUT/texts.txt" --threads "$THREADS" --rounds 1 \
            --batch "$BATCH" --precision "$p" --embeddings-out "$OUT/cohost-$p.f32" |
            tee -a "$OUT/results.jsonl"
    done
    $PY bench "$MODEL" "$OUT/texts.txt" "$THREADS" 1 "$BATCH" "$OUT/st.f32" 2>/dev/null |
        tee -a "$OUT/results.jsonl"
    if [[ $ORT == 1 ]]; then
        $PY bench-ort "$MODEL" "$OUT/texts.txt" "$THREADS" 1 "$BATCH" "$TARGET/embed-bench-minilm.onnx" \
            2>/dev/null | tee -a "$OUT/results.jsonl"
    fi
done
for p in ${PRECISIONS//,/ }; do
    $PY compare "$MODEL" "$OUT/texts.txt" "$OUT/cohost-$p.f32" "$OUT/st.f32" 2>/dev/null \
        >"$OUT/cosine-$p.json"
done
$PY table "$OUT/results.jsonl" "$OUT" | tee "$OUT/side-by-side.md"
echo "(load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$OUT/side-by-side.md"
