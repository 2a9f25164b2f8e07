#!/usr/bin/env python3
"""Lists the tests a Swift Testing log shows as started but not finished.

Used by .ci/run when the test run outlives its time limit (a hang): the tests still running
are the suspects. Output of the test process is buffered when piped, so the last lines before
the hang may be missing; a test reported here is a lead, not a proof.

Usage: tools/unfinished-tests.py LOG
"""
import re
import sys

# A test's name is a quoted display name or its function's name (no spaces).
NAME = r'("(?:[^"\\]|\\.)*"|[^\s"]+)'
START = re.compile(r'^◇ Test ' + NAME + r' started\.$')
END = re.compile(r'^[✔✘↷] Test ' + NAME + r' (passed|failed|skipped|with \d+ test cases?)')


def main(path):
    started, ended = [], set()
    with open(path, errors='replace') as log:
        for line in log:
            line = line.rstrip('\n')
            match = START.match(line)
            if match:
                started.append(match.group(1))
                continue
            match = END.match(line)
            if match:
                ended.add(match.group(1))
    # 'run' is the whole run's own start line.
    unfinished = [name for name in started if name not in ended and name != 'run']
    for name in unfinished:
        print(f'still running: {name}')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1]))
