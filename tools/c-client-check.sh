#!/usr/bin/env bash
# Checks the C client (Sources/CHourglassClient) outside SwiftPM:
#   1. compiles the library, the protoc-c code and the example (tools/c-example) with
#      -Wall -Wextra -Werror (and more), with every C compiler found (cc, gcc, clang);
#   2. starts hourglass-c-interop-server (a Swift stand-in coordinator: the in-memory
#      TaskService over hourglass/1 + TLS, with a throwaway CA written to a temp folder);
#   3. runs the example against it under valgrind (no leaks, no invalid accesses), and an
#      AddressSanitizer + UBSan build of it too; then the same for tools/c-example/
#      hourglass_error_paths.c, which drives the failure paths (deadline, NOT_FOUND,
#      PERMISSION_DENIED, INVALID_ARGUMENT, refused server certificate, unreadable key).
# Environment: HOURGLASS_C_INTEROP_SERVER = path of a built hourglass-c-interop-server
# (default: built here with `swift build --product hourglass-c-interop-server`, scratch path
# $HOURGLASS_SCRATCH or .build); HOURGLASS_C_CHECK_SKIP_RUN=1 stops after step 1.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

src_dir=Sources/CHourglassClient
sources=("$src_dir/hourglass_client.c")
while IFS= read -r f; do sources+=("$f"); done < <(find "$src_dir/generated" -name '*.c' | sort)
warnings=(-std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wundef)
includes=(-I "$src_dir/include" -I "$src_dir/generated")
libs=(-lssl -lcrypto -lprotobuf-c)
example=tools/c-example/hourglass_schedule_example.c
errors=tools/c-example/hourglass_error_paths.c

echo "== compiling the C client with -Wall -Wextra -Werror"
compilers=()
for c in cc gcc clang; do command -v "$c" >/dev/null && compilers+=("$c"); done
for c in "${compilers[@]}"; do
  "$c" "${warnings[@]}" -O2 "${includes[@]}" "${sources[@]}" "$example" "${libs[@]}" -o "$work/example-$c"
  "$c" "${warnings[@]}" -O2 "${includes[@]}" "${sources[@]}" "$errors" "${libs[@]}" -o "$work/errors-$c"
  echo "   $c: ok"
done
sanitize=(-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined)
for program in example errors; do
  file=$example
  [ $program = errors ] && file=$errors
  cc "${warnings[@]}" -O0 -g "${includes[@]}" "${sources[@]}" "$file" "${libs[@]}" -o "$work/$program-debug"
  cc "${warnings[@]}" "${sanitize[@]}" "${includes[@]}" "${sources[@]}" "$file" "${libs[@]}" -o "$work/$program-asan"
done

[ "${HOURGLASS_C_CHECK_SKIP_RUN:-0}" = 1 ] && exit 0

echo "== starting hourglass-c-interop-server"
server="${HOURGLASS_C_INTEROP_SERVER:-}"
if [ -z "$server" ]; then
  scratch="${HOURGLASS_SCRATCH:-$root/.build}"
  swift build --scratch-path "$scratch" --product hourglass-c-interop-server >&2
  server="$(swift build --scratch-path "$scratch" --show-bin-path)/hourglass-c-interop-server"
fi
mkdir -p "$work/pki"
"$server" "$work/pki" >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
port=""
for _ in $(seq 1 300); do
  port=$(sed -n 's/^port \([0-9][0-9]*\)$/\1/p' "$work/server.out" | head -1)
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.err" >&2; echo "the server exited" >&2; exit 1; }
  sleep 0.2
done
[ -n "$port" ] || { echo "the server did not report a port" >&2; exit 1; }
echo "   listening on 127.0.0.1:$port"
pki="$work/pki"
binary=$(type -P true)

run_valgrind() { # name, command...
  local name=$1
  shift
  if ! valgrind --log-file="$work/valgrind-$name.log" --leak-check=full --show-leak-kinds=definite,indirect,possible \
    --errors-for-leak-kinds=definite,indirect,possible --error-exitcode=1 "$@"; then
    cat "$work/valgrind-$name.log" >&2
    echo "$name failed under valgrind" >&2
    exit 1
  fi
  grep -E "ERROR SUMMARY|definitely lost|indirectly lost|possibly lost|All heap blocks were freed" "$work/valgrind-$name.log" |
    sed 's/^==[0-9]*== /   valgrind: /'
}
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

echo "== the example under valgrind (host name localhost: SNI and DNS SAN check)"
run_valgrind example "$work/example-debug" localhost "$port" "$pki/ca.pem" "$pki/user.pem" "$pki/user-key.pem" "$binary"

echo "== the example built with AddressSanitizer + UBSan (IP address: IP SAN check)"
"$work/example-asan" 127.0.0.1 "$port" "$pki/ca.pem" "$pki/user.pem" "$pki/user-key.pem" "$binary" "@hourly"

echo "== failure paths (deadline, server statuses, refused certificates) under valgrind"
run_valgrind errors "$work/errors-debug" localhost "$port" "$pki"

echo "== failure paths built with AddressSanitizer + UBSan"
"$work/errors-asan" 127.0.0.1 "$port" "$pki" >/dev/null

echo "C client check passed"
