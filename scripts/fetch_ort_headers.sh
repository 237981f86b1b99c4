#!/usr/bin/env bash
# Fetch the ONNX Runtime C/C++ API headers into third_party/onnxruntime/include.
#
# No pip wheel ships these headers. Debian 13 ("trixie") packages them in libonnxruntime-dev;
# we download that one .deb and unpack it without installing anything. On Debian 12 the
# package only exists in the next suite, so apt is pointed at it through a private source
# list and a private list cache: the system's own apt state is never touched.
# Users with internet access can instead unpack ORT's official release tarball and pass
# -DORT_INCLUDE_DIR=<dir> to CMake (or set ORT_INCLUDE_DIR when building the package).
set -euo pipefail

dest="${1:-third_party/onnxruntime}"
header="$dest/include/onnxruntime_c_api.h"
if [ -f "$header" ]; then
  exit 0
fi

suite="${DC_ONNX_DEBIAN_SUITE:-trixie}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Reuse the mirror this machine already trusts.
mirror="$(grep -hoE '^URIs: *\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)"
if [ -z "$mirror" ]; then
  mirror="$(grep -hoE '^deb +\S+' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n1 || true)"
fi
if [ -z "$mirror" ] || ! command -v apt-get >/dev/null; then
  echo "error: cannot fetch ONNX Runtime headers: no Debian apt mirror found." >&2
  echo "Unpack the official onnxruntime release and pass -DORT_INCLUDE_DIR=<its include dir>." >&2
  exit 1
fi

mkdir -p "$work/lists/partial" "$work/archives/partial"
echo "deb [trusted=yes] $mirror $suite main" > "$work/sources.list"
apt_opts=(
  -o "Dir::Etc::SourceList=$work/sources.list"
  -o "Dir::Etc::SourceParts=-"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache::Archives=$work/archives"
  -o "APT::Get::List-Cleanup=0"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root"
)
echo "fetching libonnxruntime-dev from $mirror ($suite) ..." >&2
apt-get "${apt_opts[@]}" -qq update >/dev/null
(cd "$work" && apt-get "${apt_opts[@]}" -qq download libonnxruntime-dev)
deb="$(ls "$work"/libonnxruntime-dev_*.deb)"
dpkg -x "$deb" "$work/root"

mkdir -p "$dest/include"
cp "$work"/root/usr/include/onnxruntime/*.h "$dest/include/"
basename "$deb" > "$dest/SOURCE"
echo "ONNX Runtime headers in $dest/include ($(cat "$dest/SOURCE"))" >&2
