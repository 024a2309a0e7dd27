#!/usr/bin/env bash
# The wheels a lent GPU machine lacks for benchmarks/gpu_check.sh, downloaded here (where pip reaches a registry)
# into DIR (default .whl, ignored by git), at the versions installed here, so the GPU runs what CI tested.
#
#   bash benchmarks/gpu_wheels.sh [DIR] [--python-version 3.12]
#   # then, on the GPU machine, in the repository root (DIR carried beside the checkout):
#   bash benchmarks/gpu_check.sh OUT_DIR --wheels DIR
#
# The H200 image (/work/.library/device/KINDS.md: Python 3.12, torch, numpy, numba, matplotlib, psutil, PyYAML,
# cloudpickle, opencv-python-headless, pytest, hypothesis, scipy) lacks gymnasium (+ farama-notifications),
# hydra-core (+ omegaconf, antlr4-python3-runtime), ale-py (ROMs included) and minatar; setuptools comes too, so
# that rlfocal's own editable install there does not depend on the image's: 4.7 MB in all. wandb is left out
# (the check logs with logger=csv). antlr4's runtime is an sdist only; it is built here into a pure-Python wheel.
# Packages are downloaded without their dependencies (--no-deps): the list above is the whole closure.
set -euo pipefail

DIR=.whl PYVER=3.12
while (($#)); do
  case $1 in
    --python-version) PYVER=${2:?--python-version needs a value, e.g. 3.12} && shift ;;
    -h | --help) sed -n '2,14p' "$0" && exit 0 ;;
    -*) echo "unknown option: $1 (allowed: --python-version X.Y)" >&2 && exit 2 ;;
    *) DIR=$1 ;;
  esac
  shift
done
[[ $PYVER =~ ^3\.[0-9]+$ ]] || { echo "--python-version must look like 3.12, not '$PYVER'" >&2; exit 2; }
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
TAG=cp${PYVER/./}

# name==version of each, as installed here (CI's versions)
mapfile -t PINS < <("$PY" - <<'EOF'
from importlib.metadata import PackageNotFoundError, version
for name in ("gymnasium", "farama-notifications", "hydra-core", "omegaconf", "antlr4-python3-runtime", "ale-py",
             "minatar", "setuptools"):
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        raise SystemExit(f"{name} is not installed here: pip install -e '.[dev]' first (its version is the one sent)")
EOF
)
mkdir -p "$DIR"
rm -f "$DIR"/*.whl
BINARY=() SDIST=()
for pin in "${PINS[@]}"; do
  if [[ $pin == antlr4-python3-runtime==* ]]; then SDIST+=("$pin"); else BINARY+=("$pin"); fi
done
platforms=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do platforms+=(--platform "${p}_x86_64"); done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp --abi "$TAG" \
  "${platforms[@]}" -d "$DIR" "${BINARY[@]}"
"$PY" -m pip wheel -q --no-deps -w "$DIR" "${SDIST[@]}"
ls -l "$DIR"/*.whl
echo "$(find "$DIR" -name '*.whl' | wc -l) wheels, $(du -ch "$DIR"/*.whl | tail -1 | cut -f1) in $DIR (for Python $PYVER)"
