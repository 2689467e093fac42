#!/usr/bin/env bash
# Installs what the build needs when it is missing: today a Rust toolchain and a C
# compiler (RocksDB's bindings will add libclang-dev with the server issue).
set -euo pipefail

missing=()
command -v cargo >/dev/null 2>&1 || { echo "error: cargo not found; install Rust from your distribution or rustup" >&2; exit 1; }
command -v cc >/dev/null 2>&1 || missing+=(gcc)

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${missing[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "error: missing build dependencies; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
