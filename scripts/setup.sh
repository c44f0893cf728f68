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
)

# --plot: also what scripts/plot_bench.py needs.
[[ "${1:-}" == "--plot" ]] && PACKAGES+=(python3-matplotlib)

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
