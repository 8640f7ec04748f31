#!/usr/bin/env bash
# Download the wheels bench/gpu_check.py needs beyond a CUDA PyTorch image, for a GPU machine without
# network: CPython 3.12, manylinux x86-64, into the git-ignored folder .whl/ (nothing is committed).
#
#   bash bench/gpu_wheels.sh            # soundfile (+ cffi, pycparser) and soxr: what the checked paths import
#   bash bench/gpu_wheels.sh --with-av  # also PyAV (codec augmentation, data/augment; ~40 MB)
#
# Such images (e.g. the lent H200 machines: torch 2.11, transformers, numpy, scipy, PyYAML, tqdm,
# safetensors, tensorboard, pytest, threadpoolctl installed) lack soundfile and soxr, which data/audio.py
# imports on every training and scoring path. Carry .whl/ with the working tree and install there:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site python3 bench/gpu_check.py --out "$OUT"
#
# (with the device tool: run(command=..., carry=[".whl"])). Without pip there, gpu_check.py unpacks the
# wheels itself (--wheels .whl). Versions follow requirements.txt; the total stays under 50 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}
DEST=.whl
PACKAGES=("soundfile>=0.12" "cffi>=1.17" "pycparser" "soxr>=0.3")
if [ "${1:-}" = "--with-av" ]; then
    PACKAGES+=("av==18.1.0")
fi
PLATFORMS=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
    manylinux2014_x86_64 manylinux1_x86_64 manylinux_2_5_x86_64; do
    PLATFORMS+=(--platform "$tag")
done
mkdir -p "$DEST"
# One version of each: pip download keeps older files beside newer ones, and two stop the install.
rm -f "$DEST"/*.whl
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --abi cp312 --abi abi3 --abi none "${PLATFORMS[@]}" --platform any -d "$DEST" "${PACKAGES[@]}"
ls -l "$DEST"
total=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
echo "total $((total / 1000)) kB in $DEST"
if [ "$total" -gt 50000000 ]; then
    echo "error: wheels exceed 50 MB" >&2
    exit 1
fi
