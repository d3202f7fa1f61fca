#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this): fetches the test models into the
# git-ignored models/cache/ when missing, then runs every crate's tests and the end-to-end tests,
# then the client-compatibility suites (real Cohere SDKs, LangChain, OpenAPI) in tests/sdk/.
set -euo pipefail
cd "$(dirname "$0")/.."
models/fetch-default.sh >/dev/null
models/fetch-gemma3.sh >/dev/null
models/fetch-minilm.sh >/dev/null
cargo test --workspace --all-targets
COHOST_BIN=${CARGO_TARGET_DIR:-$PWD/target}/debug/cohost tests/sdk/run.sh
