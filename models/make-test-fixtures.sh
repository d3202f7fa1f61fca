#!/usr/bin/env bash
# Makes the weights of the tiny random models the architecture and encoder tests run on
# (kilobytes each, never committed: weights stay out of git). Their configs, tokenizers and
# reference outputs are committed; the weights come from the numpy-only makers
# crates/{runner,encoder}/tests/golden-gen/make_weights.py, which read those committed files and
# draw every tensor from a fixed seed, so the weights come out byte for byte the same (checked
# here against models/test-fixtures.sha256). The makers write only model.safetensors and .gguf
# files. Their few pinned packages (models/test-fixtures-requirements.txt: numpy, safetensors,
# gguf, pyyaml; no torch) are installed once into models/cache/fixture-venv (git-ignored).
# The reference outputs come from the developer-only make_tiny_models.py scripts (torch and
# transformers), which the suite never runs.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
sums="$repo/models/test-fixtures.sha256"
reqs="$repo/models/test-fixtures-requirements.txt"
cd "$repo"
if sha256sum --quiet -c "$sums" >/dev/null 2>&1; then
  exit 0
fi
venv="$repo/models/cache/fixture-venv"
want="$(sha256sum <"$reqs")"
if [[ ! -x $venv/bin/python || $(cat "$venv/.stamp" 2>/dev/null) != "$want" ]]; then
  echo "installing the fixture weight makers' Python packages into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$reqs" >&2
  echo "$want" >"$venv/.stamp"
fi
for crate in runner encoder; do
  "$venv/bin/python" "crates/$crate/tests/golden-gen/make_weights.py" >/dev/null
done
sha256sum --quiet -c "$sums" >&2
echo "test fixtures ready" >&2
