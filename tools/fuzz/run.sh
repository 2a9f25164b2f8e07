#!/usr/bin/env bash
# Builds the hourglass/1 frame fuzzer with libFuzzer and AddressSanitizer and runs it.
#
#   tools/fuzz/run.sh [seconds]        # default 60
#
# Seeds: Tests/HourglassRPCTests/Fuzz Corpus (read-only here). New inputs go to
# tools/fuzz/.build-fuzz/run/corpus, crashes and timeouts to tools/fuzz/.build-fuzz/run/artifacts,
# the log to tools/fuzz/.build-fuzz/run/fuzz.log. HOURGLASS_FUZZ_CHECKS=decoder or =pipeline
# runs one of the two checks only. Extra arguments after the seconds go to libFuzzer, e.g.
# `run.sh 300 -fork=1 -ignore_crashes=1` to keep going past a crash already known.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
seconds="${1:-60}"
shift || true
seeds="$root/Tests/HourglassRPCTests/Fuzz Corpus"
work="$here/.build-fuzz/run"
mkdir -p "$work/corpus" "$work/artifacts"

# The replay test carries a copy of the harness; a fuzz run with a stale copy would check
# something the test suite does not.
shared() { sed -n '/^\/\/ BEGIN SHARED HARNESS$/,/^\/\/ END SHARED HARNESS$/p' "$1"; }
if ! diff -u <(shared "$here/Sources/FuzzFrameDecoder/FrameFuzzHarness.swift") \
  <(shared "$root/Tests/HourglassRPCTests/FuzzCorpusReplayTests.swift") >"$work/harness.diff"; then
  echo "error: the shared harness differs between tools/fuzz and FuzzCorpusReplayTests.swift:" >&2
  cat "$work/harness.diff" >&2
  exit 2
fi

# -sanitize=fuzzer,address through -Xswiftc: `--sanitize=fuzzer --sanitize=address` can drop
# the coverage instrumentation (docs/testing.md).
(cd "$here" && swift build -c release --sanitize=fuzzer -Xswiftc -sanitize=fuzzer,address --scratch-path .build-fuzz)

log="$work/fuzz.log"
# Swift's own backtracer catches a trap before libFuzzer does, and AddressSanitizer then reports a
# bogus "unknown-crash" in its memory reader; libFuzzer's report (with ASan's stack) is enough.
export SWIFT_BACKTRACE="${SWIFT_BACKTRACE:-enable=no}"
set +e
"$here/.build-fuzz/release/FuzzFrameDecoder" \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
  -dict="$here/hourglass.dict" -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" "$@" "$work/corpus" "$seeds" >"$log" 2>&1
status=$?
set -e

grep -E '^(INFO: Loaded|INFO: seed corpus|#[0-9]+[[:space:]]+(INITED|DONE))|^stat::|^(==[0-9]+==)? ?(ERROR|SUMMARY)|^artifact_prefix|Test unit written|^INFO: (fuzzed for|exiting)' "$log" || true
# The last progress line (fork mode prints only these).
grep -E '^#[0-9]+' "$log" | tail -n 1 || true
echo "saved crash/timeout/oom inputs: $(find "$work/artifacts" -type f | wc -l) in $work/artifacts"
if counters="$(grep -m1 -E 'INFO: Loaded [0-9]+ modules +\([0-9]+ inline 8-bit counters\)' "$log")"; then
  echo "coverage instrumentation: yes ($counters)"
else
  echo "coverage instrumentation: NO 'inline 8-bit counters' line in $log; the build is not instrumented" >&2
  if [ "$status" -eq 0 ]; then status=3; fi
fi
echo "libFuzzer exit status: $status; log: $log"
exit "$status"
