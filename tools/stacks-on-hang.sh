#!/usr/bin/env bash
# Used by .ci/run: waits SECONDS, then, if the test process is still running (a hang), writes the
# stack of each of its threads to OUT with gdb: the full stacks, then a summary (per thread, the
# innermost frame and the frames in Hourglass's own code) for the CI log. Killed (TERM) when the
# tests end in time.
#
# Usage: tools/stacks-on-hang.sh SECONDS OUT
set -uo pipefail
seconds=$1
out=$2
trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
sleep "$seconds" &
sleeper=$!
wait "$sleeper"
pid=$(pgrep -f 'hourglassPackageTests.xctest' | head -n 1)
if [ -z "$pid" ]; then
  echo "no test process to inspect" > "$out"
  exit 0
fi
gdb -p "$pid" -batch -ex "set pagination off" -ex "thread apply all bt" > "$out.full" 2>&1 || true
python3 - "$out.full" > "$out" <<'PY'
import re, sys
threads, current = [], None
for line in open(sys.argv[1], errors='replace'):
    line = line.rstrip('\n')
    if line.startswith('Thread '):
        current = [line]
        threads.append(current)
    elif current is not None and line.startswith('#'):
        current.append(line)
for thread in threads:
    header, frames = thread[0], thread[1:]
    ours = [f for f in frames if re.search(r' at /\S*/(Sources|Tests)/', f)]
    if not ours:
        continue  # idle threads of the runtime, NIO and Dispatch
    print(header)
    print('  ' + frames[0][:200] if frames else '')
    for frame in ours[:6]:
        print('  ' + frame[:200])
print(f'({len(threads)} threads; those without a frame in Hourglass code left out; full stacks: {sys.argv[1]})')
PY
