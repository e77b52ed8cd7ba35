#!/usr/bin/env bash
# Builds cairn into OUT (default bin/cairn): one static binary.
#   scripts/build.sh [OUT]
# With a C compiler (gcc, libc6-dev) the binary compresses with the reference
# zstd library, linked in statically; without one it falls back to the
# pure-Go encoder (CGO_ENABLED=0), about 1.75x slower at compressing.
set -euo pipefail
out=${1:-bin/cairn}
GO=${GO:-go}
cd "$(dirname "$0")/.."
if [ "${CGO_ENABLED:-}" = 0 ] || ! command -v "${CC:-gcc}" >/dev/null 2>&1; then
  echo "build: no C compiler: building without cgo (pure-Go zstd encoder)" >&2
  CGO_ENABLED=0 "$GO" build -trimpath -o "$out" ./cmd/cairn
  exit
fi
CGO_ENABLED=1 "$GO" build -trimpath -tags netgo,osusergo -ldflags '-extldflags=-static' -o "$out" ./cmd/cairn
