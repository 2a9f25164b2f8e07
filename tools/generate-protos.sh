#!/usr/bin/env bash
# Regenerates the code made from proto/:
#   proto/hourglass/rpc/v1/*.proto -> Sources/HourglassRPC/Generated/   (the protocol's own messages)
#   proto/hourglass/v1/*.proto     -> Sources/HourglassProto/Generated/ (the product's API)
# and, when protoc-c is available, the C client's messages -> Sources/CHourglassClient/generated/.
# Installs protobuf-compiler (and libprotobuf-dev for the well-known types) if missing and
# builds protoc-gen-swift from the swift-protobuf this package depends on, so the generator
# always matches the runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

need_apt=()
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/timestamp.proto ] || need_apt+=(libprotobuf-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

scratch="${HOURGLASS_PROTOC_SCRATCH:-$root/.build}"
swift build --scratch-path "$scratch" --product protoc-gen-swift >&2
plugin="$(swift build --scratch-path "$scratch" --product protoc-gen-swift --show-bin-path)/protoc-gen-swift"

out_rpc="${1:-$root}/Sources/HourglassRPC/Generated"
out_api="${1:-$root}/Sources/HourglassProto/Generated"
rm -rf "$out_rpc" "$out_api"
mkdir -p "$out_rpc" "$out_api"

protoc --plugin=protoc-gen-swift="$plugin" -I proto -I /usr/include \
  --swift_opt=Visibility=Public --swift_opt=FileNaming=PathToUnderscores \
  --swift_out="$out_rpc" proto/hourglass/rpc/v1/*.proto
protoc --plugin=protoc-gen-swift="$plugin" -I proto -I /usr/include \
  --swift_opt=Visibility=Public --swift_opt=FileNaming=PathToUnderscores \
  --swift_out="$out_api" proto/hourglass/v1/*.proto

if [ -d "$root/Sources/CHourglassClient" ]; then
  command -v protoc-c >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-c-compiler libprotobuf-c-dev >/dev/null; }
  out_c="${1:-$root}/Sources/CHourglassClient/generated"
  rm -rf "$out_c"; mkdir -p "$out_c"
  protoc-c -I proto -I /usr/include --c_out="$out_c" \
    proto/hourglass/rpc/v1/*.proto proto/hourglass/v1/*.proto \
    google/protobuf/timestamp.proto google/protobuf/duration.proto
fi
echo "generated code is up to date in $out_rpc and $out_api" >&2
