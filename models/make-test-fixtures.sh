#!/usr/bin/env bash
# Makes the tiny random models the architecture and encoder tests run on (kilobytes each, never
# committed: weights stay out of git). Their generating scripts are committed with the reference
# outputs they produced; the scripts seed every weight, so the weights come out byte for byte the
# same (checked here against the sha256 list below). The scripts run in a scratch copy of their
# test folders, so the committed goldens and configs are never rewritten; only the weights are
# copied back. The Python packages are installed once into models/cache/fixture-venv (git-ignored).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
sums="$repo/models/test-fixtures.sha256"
cd "$repo"
if sha256sum --quiet -c "$sums" >/dev/null 2>&1; then
  exit 0
fi
venv="$repo/models/cache/fixture-venv"
want="$(cat crates/encoder/tests/golden-gen/requirements.txt) gguf==0.19.0"
if [[ ! -x $venv/bin/python || $(cat "$venv/.stamp" 2>/dev/null) != "$want" ]]; then
  echo "installing the fixture generators' Python packages into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    -r crates/encoder/tests/golden-gen/requirements.txt gguf==0.19.0 >&2
  echo "$want" >"$venv/.stamp"
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for crate in runner encoder; do
  mkdir -p "$tmp/$crate"
  cp -r "crates/$crate/tests/golden-gen" "crates/$crate/tests/fixtures" \
    "crates/$crate/tests/golden" "$tmp/$crate/"
  (cd "$tmp/$crate" && "$venv/bin/python" golden-gen/make_tiny_models.py >"$tmp/$crate.log" 2>&1) ||
    { cat "$tmp/$crate.log" >&2; exit 1; }
done
(cd "$tmp/runner/fixtures/tiny" && find . -name '*.gguf' -o -name 'model.safetensors') |
  while read -r f; do cp "$tmp/runner/fixtures/tiny/$f" "crates/runner/tests/fixtures/tiny/$f"; done
(cd "$tmp/encoder/fixtures" && find . -name 'model.safetensors') |
  while read -r f; do cp "$tmp/encoder/fixtures/$f" "crates/encoder/tests/fixtures/$f"; done
sha256sum --quiet -c "$sums" >&2
echo "test fixtures ready" >&2
