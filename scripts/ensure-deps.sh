#!/usr/bin/env bash
# Installs what the build needs when it is missing: a C/C++ compiler and libclang (for
# RocksDB's bindings), and curl and jq for the platform demo and its tour. As root with apt-get it installs them; otherwise it prints the
# exact command.
set -euo pipefail

command -v cargo >/dev/null 2>&1 || { echo "error: cargo not found; install Rust from your distribution or rustup" >&2; exit 1; }

missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
have_libclang() {
  [ -n "${LIBCLANG_PATH:-}" ] && return 0
  ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* >/dev/null 2>&1 && return 0
  # libclang-cpp is a different library (the C++ API); bindgen needs libclang itself.
  ldconfig -p 2>/dev/null | grep -Eq 'libclang(-[0-9.]+)?\.so'
}
have_libclang || missing+=(libclang-dev)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v jq >/dev/null 2>&1 || missing+=(jq)

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing build dependencies: ${missing[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "error: missing build dependencies; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
