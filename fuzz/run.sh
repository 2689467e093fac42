#!/usr/bin/env bash
# Runs every fuzz target in turn (`make fuzz`), each for FUZZ_SECONDS, and says for
# each how many inputs it ran and whether it found a crash.
#
#   FUZZ_SECONDS   time per target (default 60)
#   FUZZ_TIMEOUT   seconds one input may take before it counts as a hang (default 10)
#   FUZZ_RSS_MB    memory limit of a fuzzing process, in MB (default 2048)
#   FUZZ_TARGETS   the targets to run (default: all of them, in the order below)
#   FUZZ_ARGS      more libFuzzer flags for every run (e.g. -max_len=65536)
#   FUZZ_TARGET_DIR  cargo's target dir for the fuzz build (default ~/.cache/arbiter-fuzz-target)
#
# Corpora grow in fuzz/corpus/<target> (seeded from fuzz/seeds/<target>, with the
# keywords of fuzz/dicts/<target>.dict as a libFuzzer dictionary); crashers go to
# fuzz/artifacts/<target>/, and each run's libFuzzer output to fuzz/artifacts/<target>.log.
set -uo pipefail

cd "$(dirname "$0")"

SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
TIMEOUT="${FUZZ_TIMEOUT:-10}"
RSS_MB="${FUZZ_RSS_MB:-2048}"
TARGETS="${FUZZ_TARGETS:-schema relationship validation_file attribute_type attribute_value cedar_policy authzen_request}"
CARGO="${CARGO:-cargo}"
# The fuzz build has its own target dir: it is a nightly, sanitized build that shares
# nothing with the workspace's (the Makefile exports CARGO_TARGET_DIR for that one).
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/arbiter-fuzz-target}"

if ! "$CARGO" +nightly --version >/dev/null 2>&1; then
  echo "error: fuzzing needs the nightly toolchain (\`$CARGO +nightly\` does not run)" >&2
  exit 1
fi
if ! "$CARGO" +nightly fuzz --help >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  "$CARGO" +nightly install cargo-fuzz || exit 1
fi

echo "== building the fuzz targets (nightly, sanitized; target dir $CARGO_TARGET_DIR)"
"$CARGO" +nightly fuzz build || exit 1

mkdir -p artifacts
summary=()
found=0
for target in $TARGETS; do
  mkdir -p "corpus/$target" "artifacts/$target"
  log="artifacts/$target.log"
  before=$(find "artifacts/$target" -type f | wc -l)
  echo "== fuzzing $target for ${SECONDS_PER_TARGET}s (log: fuzz/$log)"
  seeds=()
  [ -d "seeds/$target" ] && seeds=("seeds/$target")
  dict=()
  [ -f "dicts/$target.dict" ] && dict=("-dict=dicts/$target.dict")
  "$CARGO" +nightly fuzz run "$target" "corpus/$target" "${seeds[@]}" -- \
    -max_total_time="$SECONDS_PER_TARGET" -timeout="$TIMEOUT" -rss_limit_mb="$RSS_MB" \
    -print_final_stats=1 "${dict[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1
  status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  after=$(find "artifacts/$target" -type f | wc -l)
  if [ "$status" -eq 0 ] && [ "$after" -eq "$before" ]; then
    result="no crash"
  else
    found=1
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    kind=$(grep -m 1 -oE 'ERROR: (libFuzzer|AddressSanitizer): [a-z-]+|panicked at [^ ]+|has overflowed its stack' "$log")
    result="FOUND: ${kind:-exit status $status} -> ${artifact:-see fuzz/$log}"
  fi
  line=$(printf '%-17s %12s execs %8s/s   %s' "$target" "${execs:-?}" "${rate:-?}" "$result")
  echo "   $line"
  summary+=("$line")
done

echo "== fuzz summary (${SECONDS_PER_TARGET}s a target)"
printf '   %s\n' "${summary[@]}"
if [ "$found" -ne 0 ]; then
  echo "== crashers are in fuzz/artifacts/<target>/; replay one with: cargo +nightly fuzz run <target> <file>"
fi
exit "$found"
