#!/usr/bin/env bash
# Installs the pinned client packages into git-ignored folders, once: each folder keeps a stamp
# (the hash of the file that pins it) and is rebuilt only when that file changes.
#   tests/sdk/.venv            requirements.txt            cohere 7.3.1, schemathesis, pytest
#   tests/sdk/.venv-langchain  requirements-langchain.txt  langchain-cohere 0.6.0 (needs cohere<6)
#   tests/sdk/ts/node_modules  ts/package-lock.json        cohere-ai 8.1.0
set -euo pipefail
cd "$(dirname "$0")"

stamp_of() { sha256sum "$@" | sha256sum | cut -d' ' -f1; }

python_env() {
    local dir=$1 requirements=$2
    local want
    want=$(stamp_of "$requirements" <(python3 --version))
    if [[ -f $dir/.cohost-stamp && $(cat "$dir/.cohost-stamp") == "$want" ]]; then
        return
    fi
    echo "installing $requirements into tests/sdk/$dir" >&2
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$requirements"
    "$dir/bin/pip" check >&2
    echo "$want" >"$dir/.cohost-stamp"
}

node_env() {
    local want
    want=$(stamp_of ts/package.json ts/package-lock.json <(node --version))
    if [[ -f ts/node_modules/.cohost-stamp && $(cat ts/node_modules/.cohost-stamp) == "$want" ]]; then
        return
    fi
    echo "installing tests/sdk/ts/node_modules from package-lock.json" >&2
    (cd ts && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >ts/node_modules/.cohost-stamp
}

python_env .venv requirements.txt
python_env .venv-langchain requirements-langchain.txt
node_env
