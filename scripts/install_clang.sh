#!/usr/bin/env bash
# Installs clang and its sanitizer/libFuzzer runtime from Debian's packages when missing
# (`make fuzz` needs them; CI starts from a fresh machine, as root). Prints the clang++
# to use. Debian 12 ships clang 14: libclang-rt-14-dev holds libFuzzer and ASan/UBSan.
set -euo pipefail

# The first clang++ whose resource directory holds libFuzzer (lib/linux/ in clang 14,
# lib/<triple>/ in newer layouts).
find_clang() {
  for c in clang++ clang++-14 clang++-15 clang++-16 clang++-17 clang++-18 clang++-19; do
    command -v "$c" >/dev/null 2>&1 || continue
    if ls "$("$c" -print-resource-dir)"/lib/*/libclang_rt.fuzzer*.a >/dev/null 2>&1; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

if find_clang; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "install_clang.sh: clang with libFuzzer is missing; run as root or install" \
       "clang and libclang-rt-dev (Debian) yourself" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Other jobs on the machine may hold the dpkg lock: wait for it rather than fail.
apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
apt-get -o DPkg::Lock::Timeout=600 install -y -qq clang libclang-rt-14-dev >&2 ||
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq clang >&2
find_clang || { echo "install_clang.sh: clang installed but no libFuzzer runtime found" >&2; exit 1; }
