#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this): fetches the test models and installs
# the pinned client packages when missing (behind the build), then runs every crate's tests and
# the end-to-end tests, then the client-compatibility suites (real Cohere SDKs, LangChain,
# OpenAPI) in tests/sdk/, the playground page in headless Chromium (tests/playground/) and the
# offline checks of the deployment files (deploy/check.sh).
# Models live in $COHOST_MODEL_DIR, else the git-ignored models/cache/: the fetch scripts, the
# cargo tests and every server the suites start look there.
set -euo pipefail
cd "$(dirname "$0")/.."
export COHOST_MODEL_DIR=${COHOST_MODEL_DIR:-$PWD/models/cache}
# A CI run builds from a clean clone, where incremental compilation only adds the cost of
# writing its caches. (Locally it is left on: switching it changes every workspace crate's
# fingerprint and would rebuild them between `cargo test` and this script.)
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}; fi

timings=()
step() {
    local name=$1 started=$SECONDS
    shift
    echo "=== $name ===" >&2
    "$@"
    timings+=("$name: $((SECONDS - started)) s")
}

# Fetching the models and installing the client packages wait on the network and the disk, so
# they run behind the build, which keeps both cores busy; the tests start once both are done.
prepare_log=$(mktemp -t cohost-prepare.XXXXXX)
trap 'rm -f "$prepare_log"' EXIT
(
    models/fetch-default.sh >/dev/null && models/fetch-gemma3.sh >/dev/null &&
        models/fetch-minilm.sh >/dev/null && models/make-test-fixtures.sh &&
        tests/sdk/install.sh && tests/playground/install.sh
) >"$prepare_log" 2>&1 &
prepare_pid=$!
wait_prepare() {
    if ! wait "$prepare_pid"; then
        cat "$prepare_log" >&2
        echo "fetching the models or installing the client packages failed" >&2
        return 1
    fi
}

step "build" cargo test --workspace --all-targets --no-run
step "fetch models, install clients (behind the build)" wait_prepare
step "cargo test" cargo test --workspace --all-targets
export COHOST_BIN=${CARGO_TARGET_DIR:-$PWD/target}/debug/cohost
step "SDK suites" tests/sdk/run.sh
step "playground (Chromium)" tests/playground/run.sh
step "deploy checks" deploy/check.sh
printf '%s\n' "${timings[@]}" >&2
