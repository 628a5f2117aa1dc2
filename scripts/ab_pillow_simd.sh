#!/usr/bin/env bash
# pillow-simd against Pillow, end to end, interleaved: the package is swapped in .venv
# between runs (simd, Pillow, simd, Pillow, ...), so the shared machine's drift hits both
# alike; each run is scripts/bench_embed.py (one repeat, its own bare-forward reference).
# Pillow is put back when the script ends, however it ends.
#
#   bash scripts/ab_pillow_simd.sh [PAIRS] [N_IMAGES] [OUT_FOLDER]
#
# Needs a C compiler and libjpeg/zlib headers (Debian: gcc libjpeg-dev zlib1g-dev) to build
# pillow-simd once (about a minute). Writes OUT_FOLDER/ab_{simd,pillow}_<pair>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-3}
n_images=${2:-2000}
out=${3:-docs/perf/pillow_simd_ab}
pip=.venv/bin/pip
pillow_version=$(.venv/bin/python -c "import PIL; print(PIL.__version__)")
wheels=$(mktemp -d)
trap '$pip uninstall -y -q pillow-simd >/dev/null 2>&1 || true; $pip install -q --no-deps --force-reinstall "$wheels"/pillow-*.whl; rm -rf "$wheels"' EXIT
$pip download -q --no-deps -d "$wheels" "pillow==$pillow_version"
CC="cc -mavx2" $pip wheel -q --no-deps -w "$wheels" "pillow-simd==12.1.1.post0"
mkdir -p "$out"
for i in $(seq 1 "$pairs"); do
  for variant in simd pillow; do
    if [ "$variant" = simd ]; then
      $pip uninstall -y -q pillow
      $pip install -q --no-deps "$wheels"/pillow_simd-*.whl
    else
      $pip uninstall -y -q pillow-simd
      $pip install -q --no-deps "$wheels"/pillow-*.whl
    fi
    echo "pair $i, $variant: PIL $(.venv/bin/python -c 'import PIL; print(PIL.__version__)')"
    .venv/bin/python scripts/bench_embed.py --backbones efficientnet_lite0 \
      --n-images "$n_images" --repeats 1 --folder /tmp/ab-jpegs \
      --json "$out/ab_${variant}_$i.json" | grep "end to end" | tail -1
  done
done
