#!/usr/bin/env bash
# `make fuzz`: builds the libFuzzer targets of runtime_ops/fuzz/ with clang under ASan +
# UBSan, writes the seed corpus from the bundled LeNets (once), then runs each target for
# FUZZ_SECONDS seconds. Usage: scripts/run_fuzz.sh PYTHON [TARGET...]
# (PYTHON has dc_onnx installed: the seeds are compiled models). Corpora grow in
# build/fuzz/corpus/<target>/ across runs; a finding is written to build/fuzz/findings/
# and makes the script fail. The inputs of past findings, runtime_ops/fuzz/regressions/,
# are run first on every call, as regression tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(realpath -s "$1")  # used from /tmp below: keep the venv's link, not its target
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_decoder fuzz_kernel)
seconds=${FUZZ_SECONDS:-60}
out=build/fuzz

cxx=$(bash scripts/install_clang.sh)
CXX=$cxx cmake -S runtime_ops -B "$out" -DDC_ONNX_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  >"$out.configure.log" 2>&1 || { cat "$out.configure.log"; exit 1; }
cmake --build "$out" -j2 --target "${targets[@]}"

if [ ! -f "$out/seeds/.done" ]; then
  rm -rf "$out/seeds"
  # From outside the repo: the source folder would shadow the installed package.
  (cd /tmp && "$python" "$OLDPWD/scripts/fuzz_seeds.py" "$OLDPWD/$out/seeds")
  touch "$out/seeds/.done"
fi

mkdir -p "$out/findings"
status=0
for t in "${targets[@]}"; do
  mkdir -p "$out/corpus/$t"
  echo "== $t: ${seconds}s (corpus $out/corpus/$t, seeds $out/seeds)"
  # Allocation beyond 2 GiB counts as a finding (bounded allocation is a property under
  # test); inputs are capped at 16 KiB (as the seeds are) so executions stay fast.
  if ! "$out/$t" -max_total_time="$seconds" -max_len=16384 -rss_limit_mb=2048 \
      -malloc_limit_mb=2048 -timeout=20 -print_final_stats=1 \
      -dict=runtime_ops/fuzz/fuzz.dict -artifact_prefix="$out/findings/$t-" \
      "$out/corpus/$t" "$out/seeds" runtime_ops/fuzz/regressions \
      >"$out/$t.log" 2>&1; then
    status=1
    echo "== $t: FINDING (see $out/$t.log and $out/findings/)"
  fi
  grep -E "^#[0-9]+.*(DONE|pulse)|stat::number_of_executed_units|stat::peak_rss" "$out/$t.log" |
    tail -3 || true
done
exit $status
