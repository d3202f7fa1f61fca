#!/usr/bin/env bash
# Offline checks of deploy/ (scripts/test-all.sh runs this; nothing here needs Docker or a cluster):
#   1. yamllint over every YAML file in deploy/ (deploy/.yamllint.yaml);
#   2. kubernetes-validate --strict on every manifest in deploy/kubernetes/ against Kubernetes 1.30
#      and 1.37 (schemas shipped in the package: an unknown or misspelt field is an error), and the adapter rules embedded in
#      prometheus-adapter.yaml parse as YAML;
#   3. hadolint on deploy/Dockerfile (deploy/.hadolint.yaml), and every path the Dockerfile
#      copies from the build context exists;
#   4. every COHOST_* variable the manifests and the Dockerfile set is one `cohost serve --help`
#      lists, so a renamed flag cannot leave a deployment silently on a default.
# Tools are pinned in deploy/requirements.txt and installed once into deploy/.venv (git-ignored).
# Env: COHOST_BIN (default: build it with cargo).
set -euo pipefail
cd "$(dirname "$0")"
DEPLOY=$PWD
REPO=$(cd .. && pwd)

want=$(sha256sum requirements.txt <(python3 --version) | sha256sum | cut -d' ' -f1)
if [[ ! -f .venv/.cohost-stamp || $(cat .venv/.cohost-stamp) != "$want" ]]; then
    echo "installing deploy/requirements.txt into deploy/.venv" >&2
    rm -rf .venv
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check --no-deps -r requirements.txt
    .venv/bin/pip check >&2
    echo "$want" >.venv/.cohost-stamp
fi
bin=$DEPLOY/.venv/bin

if [[ -z ${COHOST_BIN:-} ]]; then
    (cd "$REPO" && cargo build --quiet --bin cohost)
    COHOST_BIN=${CARGO_TARGET_DIR:-$REPO/target}/debug/cohost
fi

failed=()
check() {
    local name=$1
    shift
    if "$@"; then
        echo "ok: $name" >&2
    else
        echo "FAILED: $name" >&2
        failed+=("$name")
    fi
}

manifests=()
for f in kubernetes/*.yaml; do
    # kustomization.yaml is kustomize's own file, not a Kubernetes resource.
    [[ $(basename "$f") == kustomization.yaml ]] || manifests+=("$f")
done

check yamllint "$bin/yamllint" --strict -c .yamllint.yaml .yamllint.yaml .hadolint.yaml kubernetes
# The oldest Kubernetes these manifests claim (preStop `sleep` is on by default from 1.30) and the
# newest the package knows.
for version in 1.30.0 1.37.0; do
    check "kubernetes-validate $version" \
        "$bin/kubernetes-validate" --kubernetes-version "$version" --strict --quiet "${manifests[@]}"
done
check hadolint "$bin/hadolint" --config .hadolint.yaml Dockerfile
check "consistency (adapter rules, Dockerfile sources, COHOST_* names)" \
    "$bin/python" - "$REPO" "$COHOST_BIN" <<'PY'
import pathlib, re, subprocess, sys
import yaml

repo, binary = pathlib.Path(sys.argv[1]), sys.argv[2]
deploy = repo / "deploy"
errors = []

# The adapter reads its rules from the ConfigMap's config.yaml: it must be YAML with rules that
# name the metric the HPA asks for.
adapter = yaml.safe_load((deploy / "kubernetes/prometheus-adapter.yaml").read_text())
rules = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
exposed = {r["name"]["as"] for r in rules}
hpa = yaml.safe_load((deploy / "kubernetes/hpa.yaml").read_text())
for metric in hpa["spec"]["metrics"]:
    if metric["type"] == "Pods" and metric["pods"]["metric"]["name"] not in exposed:
        errors.append(f"hpa.yaml scales on {metric['pods']['metric']['name']}, which the adapter rules do not expose")

# The adapter's series must be one the server exports (registered in metrics.rs without the
# `cohost_` prefix).
exported = set(re.findall(r'"([a-z_]+)",\s*\n?\s*"', (repo / "crates/server/src/metrics.rs").read_text()))
for rule in rules:
    series = re.match(r"[a-z_]+", rule["seriesQuery"]).group(0)
    if series.removeprefix("cohost_") not in exported:
        errors.append(f"the adapter reads {series}, which crates/server/src/metrics.rs does not register")

# COPY sources from the build context must exist (the context is the repository root).
dockerfile = (deploy / "Dockerfile").read_text()
for line in dockerfile.splitlines():
    words = line.split()
    if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
        for src in [w for w in words[1:-1] if not w.startswith("--")]:
            if not (repo / src).exists():
                errors.append(f"Dockerfile copies {src}, which is not in the repository")

# Every COHOST_* variable set anywhere in deploy/ must be one the binary reads.
help_text = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, check=True).stdout
known = set(re.findall(r"env: (COHOST_[A-Z0-9_]+)", help_text))
if not known:
    errors.append("`cohost serve --help` lists no COHOST_* variable")
used = {}
for path in [deploy / "Dockerfile", *sorted((deploy / "kubernetes").glob("*.yaml"))]:
    for name in re.findall(r"\b(COHOST_[A-Z0-9_]+)\b", path.read_text()):
        used.setdefault(name, path.name)
for name, where in sorted(used.items()):
    if name not in known:
        errors.append(f"{where} sets {name}, which `cohost serve` does not read")

for e in errors:
    print(e, file=sys.stderr)
sys.exit(1 if errors else 0)
PY

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "deploy checks failed: ${failed[*]}" >&2
    exit 1
fi
echo "deploy checks: ${#manifests[@]} manifests, the Dockerfile and the COHOST_* names are fine" >&2
