#!/usr/bin/env bash
# The client-compatibility suites against the real `cohost` binary and the default model:
#   python/     the Cohere Python SDK (cohere 7.3.1)          pytest
#   ts/         the Cohere TypeScript SDK (cohere-ai 8.1.0)   node --test
#   langchain/  LangChain's ChatCohere (langchain-cohere 0.6.0) pytest
#   schemathesis/  the official OpenAPI spec, property-based   pytest + schemathesis
# Installs the pinned packages once (install.sh), builds the binary, starts one open server for
# the first three suites and one with a small --max-tokens ceiling for schemathesis, and stops
# each at the end, also on failure. Suites that need other flags (auth on, one slot) start their
# own servers from the fixtures. Every suite runs; the exit status is non-zero if any failed.
# Usage: tests/sdk/run.sh [python|ts|langchain|schemathesis ...]
set -euo pipefail
cd "$(dirname "$0")"
SDK_DIR=$PWD
REPO=$(cd ../.. && pwd)
suites=("$@")
[[ ${#suites[@]} -gt 0 ]] || suites=(python ts langchain schemathesis)

./install.sh
# scripts/test-all.sh passes the binary its `cargo test` just built: a separate `cargo build`
# resolves features without the dev-dependencies and would compile a second copy of half the
# dependency tree.
if [[ -z ${COHOST_BIN:-} ]]; then
    (cd "$REPO" && cargo build --quiet --bin cohost)
    COHOST_BIN=${CARGO_TARGET_DIR:-$REPO/target}/debug/cohost
fi
export COHOST_BIN
export COHOST_SDK_MODEL=SmolLM2-135M-Instruct.Q4_1
# The default model's folder: the caller's, else the repository's models/cache.
export COHOST_MODEL_DIR=${COHOST_MODEL_DIR:-$REPO/models/cache}
# The shared server serves chat and embeddings side by side, as a RAG application uses them.
SHARED_MODELS=(--model "$COHOST_MODEL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
    --model "$COHOST_MODEL_DIR/all-MiniLM-L6-v2")
# The servers' flags come from here only, never from the caller's COHOST_* settings.
keep=(COHOST_BIN COHOST_SDK_MODEL COHOST_MODEL_DIR)
while IFS='=' read -r name _; do
    [[ $name == COHOST_* && " ${keep[*]} " != *" $name "* ]] && unset "$name"
done < <(env)

server_pid=""
server_log=$(mktemp -t cohost-sdk-server.XXXXXX)

stop_server() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap 'stop_server; rm -f "$server_log"' EXIT
trap 'exit 130' INT TERM

# Starts `cohost serve` on a free port with the given extra flags; sets COHOST_SDK_URL.
start_server() {
    stop_server
    : >"$server_log"
    RUST_LOG=info "$COHOST_BIN" serve --host 127.0.0.1 --port 0 "$@" 2>"$server_log" &
    server_pid=$!
    local addr="" deadline=$((SECONDS + 180))
    while [[ -z $addr ]]; do
        addr=$(grep -o 'addr=[^ ]*' "$server_log" | head -n1 | cut -d= -f2 || true)
        kill -0 "$server_pid" 2>/dev/null || { cat "$server_log" >&2; return 1; }
        ((SECONDS < deadline)) || { echo "no address in the log" >&2; return 1; }
        [[ -n $addr ]] || sleep 0.1
    done
    export COHOST_SDK_URL="http://$addr"
    until curl -fsS "$COHOST_SDK_URL/ready" >/dev/null 2>&1; do
        kill -0 "$server_pid" 2>/dev/null || { cat "$server_log" >&2; return 1; }
        ((SECONDS < deadline)) || { echo "not ready within 180 s" >&2; return 1; }
        sleep 0.2
    done
}

failed=()
timings=()
run_suite() {
    local name=$1
    shift
    local started=$SECONDS
    echo "=== $name ===" >&2
    if ! "$@"; then
        failed+=("$name")
        echo "--- server log (last 40 lines) ---" >&2
        tail -n 40 "$server_log" >&2
    fi
    timings+=("$name: $((SECONDS - started)) s")
}

pytest_args=(-q -p no:cacheprovider -W ignore::DeprecationWarning)
for suite in "${suites[@]}"; do
    case $suite in
    python | ts | langchain)
        [[ -n $server_pid ]] || start_server "${SHARED_MODELS[@]}"
        case $suite in
        python) run_suite python .venv/bin/python -m pytest "${pytest_args[@]}" python ;;
        ts) run_suite ts node --test ts/sdk.test.mjs ;;
        langchain) run_suite langchain .venv-langchain/bin/python -m pytest "${pytest_args[@]}" langchain ;;
        esac
        ;;
    schemathesis)
        # A small output ceiling keeps every generated chat request short.
        stop_server
        start_server --max-tokens 4
        run_suite schemathesis .venv/bin/python -m pytest "${pytest_args[@]}" schemathesis
        stop_server
        ;;
    *)
        echo "unknown suite: $suite (python, ts, langchain, schemathesis)" >&2
        exit 2
        ;;
    esac
done
stop_server

printf '%s\n' "${timings[@]}" >&2
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "SDK suites failed: ${failed[*]}" >&2
    exit 1
fi
