#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this): fetches the test models when missing,
# then runs every crate's tests and the end-to-end tests, then the client-compatibility suites
# (real Cohere SDKs, LangChain, OpenAPI) in tests/sdk/, the playground page in headless Chromium
# (tests/playground/) and the offline checks of the deployment files (deploy/check.sh).
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

step "fetch models" bash -c 'models/fetch-default.sh >/dev/null && models/fetch-gemma3.sh >/dev/null && models/fetch-minilm.sh >/dev/null && models/make-test-fixtures.sh'
step "cargo test" cargo test --workspace --all-targets
export COHOST_BIN=${CARGO_TARGET_DIR:-$PWD/target}/debug/cohost
step "SDK suites" tests/sdk/run.sh
step "playground (Chromium)" tests/playground/run.sh
step "deploy checks" deploy/check.sh
printf '%s\n' "${timings[@]}" >&2
