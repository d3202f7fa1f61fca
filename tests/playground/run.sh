#!/usr/bin/env bash
# The playground page in a real browser: installs Debian's `chromium` when it is missing and
# playwright-core (pinned by package-lock.json) into the git-ignored node_modules/, starts the real
# `cohost serve` with the default model and an API key on a free port, runs
# playground.test.mjs (load the page, send messages, check the streamed text, the request the
# page sent, citations, no console error) and stops the server on exit, also on failure.
# Screenshots land in tests/playground/artifacts/ (git-ignored).
# Env: COHOST_BIN (default: build it), COHOST_MODEL_DIR (default: the repository's models/cache),
# CHROMIUM (default: /usr/bin/chromium).
set -euo pipefail
cd "$(dirname "$0")"
HERE=$PWD
REPO=$(cd ../.. && pwd)
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

./install.sh

if [[ -z ${COHOST_BIN:-} ]]; then
    (cd "$REPO" && cargo build --quiet --bin cohost)
    COHOST_BIN=${CARGO_TARGET_DIR:-$REPO/target}/debug/cohost
fi
model_dir=${COHOST_MODEL_DIR:-$REPO/models/cache}
# The server's flags come from here only, never from the caller's COHOST_* settings.
while IFS='=' read -r name _; do
    [[ $name == COHOST_* && $name != COHOST_BIN ]] && unset "$name"
done < <(env)
export COHOST_MODEL_DIR=$model_dir

key=playground-$RANDOM$RANDOM
log=$(mktemp -t cohost-playground.XXXXXX)
pid=""
cleanup() {
    if [[ -n $pid ]]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -f "$log"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

RUST_LOG=info "$COHOST_BIN" serve --host 127.0.0.1 --port 0 --api-key "$key" --max-tokens 64 2>"$log" &
pid=$!
addr="" deadline=$((SECONDS + 180))
until [[ -n $addr ]] && curl -fsS "http://$addr/ready" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    ((SECONDS < deadline)) || { echo "server not ready within 180 s" >&2; cat "$log" >&2; exit 1; }
    [[ -n $addr ]] || addr=$(grep -o 'addr=[^ ]*' "$log" | head -n1 | cut -d= -f2 || true)
    sleep 0.2
done

status=0
COHOST_PLAYGROUND_URL="http://$addr" COHOST_PLAYGROUND_KEY=$key \
    COHOST_PLAYGROUND_MODEL=SmolLM2-135M-Instruct.Q4_1 COHOST_PLAYGROUND_ARTIFACTS="$HERE/artifacts" \
    node --test --test-reporter=spec playground.test.mjs || status=$?
if [[ $status != 0 ]]; then
    echo "--- server log (last 40 lines) ---" >&2
    tail -n 40 "$log" >&2
fi
exit "$status"
