#!/usr/bin/env bash
# One command to run Hourglass on this machine: installs the Debian packages the build needs
# (when missing and when allowed to), builds the `hourglass` binary, and runs `hourglass dev`:
# a coordinator and executors in one process on SQLite, under .hourglass-dev/ in the current
# folder. Arguments are passed to `hourglass dev` (e.g. --executors 4 --port 7443).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

missing=()
for package in libsqlite3-dev libssl-dev libprotobuf-c-dev; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "building hourglass (the first build takes a few minutes)" >&2
swift build --package-path "$repo" --product hourglass >&2
bin="$(swift build --package-path "$repo" --show-bin-path)"
echo "client commands: export PATH=\"$bin:\$PATH\"  (then: hourglass list)" >&2
exec "$bin/hourglass" dev "$@"
