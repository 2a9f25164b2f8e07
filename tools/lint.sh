#!/usr/bin/env bash
# Lints the Swift sources with the toolchain's swift-format and the repository's .swift-format.
# Generated code is excluded. `tools/lint.sh --fix` rewrites files in place instead.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files 'Sources/*.swift' 'Tests/*.swift' 'Package.swift' | grep -v '/Generated/')
if [ "${1:-}" = "--fix" ]; then
  swift format format --in-place --configuration .swift-format "${files[@]}"
else
  swift format lint --strict --configuration .swift-format "${files[@]}"
  echo "format: ok (${#files[@]} files)"
fi
