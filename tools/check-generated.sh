#!/usr/bin/env bash
# Fails when the committed generated code differs from what tools/generate-protos.sh makes now.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tools/generate-protos.sh "$tmp" 2>/dev/null
status=0
for dir in Sources/HourglassRPC/Generated Sources/HourglassProto/Generated Sources/CHourglassClient/generated; do
  [ -d "$dir" ] || [ -d "$tmp/$dir" ] || continue
  if ! diff -r "$dir" "$tmp/$dir" >/dev/null 2>&1; then
    echo "stale generated code in $dir: run tools/generate-protos.sh and commit" >&2
    diff -r "$dir" "$tmp/$dir" | head -20 >&2 || true
    status=1
  fi
done
[ $status -eq 0 ] && echo "generated code is current"
exit $status
