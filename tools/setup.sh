#!/usr/bin/env bash
# Installs everything blockflash needs to build and test on a fresh Debian 12 machine.
# Idempotent: a second run only checks. Run as root (or with sudo available).
set -euo pipefail
packages=(build-essential cmake pkg-config git python3 python3-pip
          nlohmann-json3-dev libpcre2-dev libutf8proc-dev libopenblas-dev libcli11-dev
          libgtest-dev libcpp-httplib-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi
# The server tests drive blockflash with the official OpenAI Python client.
python3 -c "import openai" 2>/dev/null || python3 -m pip install -q openai || \
  python3 -m pip install -q --break-system-packages openai
