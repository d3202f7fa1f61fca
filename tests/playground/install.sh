#!/usr/bin/env bash
# What the playground test needs besides the binary, installed once: Debian's `chromium` when it
# is missing, and playwright-core (pinned by package-lock.json) into the git-ignored
# node_modules/, rebuilt only when the lock file or node changes. run.sh calls it;
# scripts/test-all.sh also runs it early, behind the build.
set -euo pipefail
cd "$(dirname "$0")"
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

if [[ ! -x $CHROMIUM ]]; then
    echo "installing Debian's chromium" >&2
    sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium >&2
fi

want=$(sha256sum package.json package-lock.json <(node --version) | sha256sum | cut -d' ' -f1)
if [[ ! -f node_modules/.cohost-stamp || $(cat node_modules/.cohost-stamp) != "$want" ]]; then
    echo "installing tests/playground/node_modules from package-lock.json" >&2
    npm ci --no-audit --no-fund --loglevel=error
    echo "$want" >node_modules/.cohost-stamp
fi
