#!/usr/bin/env bash
# System packages the toolchain needs beyond PyPI: g++ and cmake (kernels/), the aarch64 cross compiler
# (arm64 / android-arm64 targets), qemu-user (runs aarch64 binaries here) and valgrind (the callgrind bench
# device). Debian / Ubuntu; needs root (or sudo). Safe to re-run.
set -euo pipefail
packages=(g++ cmake make g++-aarch64-linux-gnu gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user valgrind file)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
