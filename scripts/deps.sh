#!/usr/bin/env bash
# Installs the Debian packages cairn needs when they are missing.
#   scripts/deps.sh run    tools the server and node use
#   scripts/deps.sh test   those plus what the tests drive (and versitygw,
#                          built with go install into $(go env GOPATH)/bin)
# As root it runs apt-get; otherwise it prints the exact command and fails.
set -euo pipefail
what=${1:-run}

# Go programs the tests drive, built from source with `go install` (works as
# non-root too): versitygw, the S3 server the blob tests start on loopback.
if [ "$what" = test ] || [ "$what" = bench ]; then
  gocmd=$(command -v go || echo /usr/local/go/bin/go)
  if [ ! -x "$gocmd" ]; then
    echo "Go is not installed: install Go 1.26 or newer first" >&2
    exit 1
  fi
  gobin=$("$gocmd" env GOBIN)
  [ -n "$gobin" ] || gobin="$("$gocmd" env GOPATH | cut -d: -f1)/bin"
  if ! command -v versitygw >/dev/null 2>&1 && [ ! -x "$gobin/versitygw" ]; then
    echo "installing versitygw (the S3 server the tests use) into $gobin, about 2 minutes:" >&2
    echo "  go install github.com/versity/versitygw/cmd/versitygw@v1.8.0" >&2
    "$gocmd" install github.com/versity/versitygw/cmd/versitygw@v1.8.0
  fi
fi

# command -> Debian package
declare -A pkg=(
  # the build links the C zstd library in (scripts/build.sh)
  [gcc]=gcc
  [qemu-img]=qemu-utils
  [qemu-io]=qemu-utils
  [qemu-nbd]=qemu-utils
  [qemu-storage-daemon]=qemu-system-common
)
if [ "$what" = test ] || [ "$what" = bench ]; then
  pkg[nbdinfo]=libnbd-bin
  pkg[nbdcopy]=libnbd-bin
  pkg[qemu-system-x86_64]=qemu-system-x86
  # test file systems inside disk images, for copying files out of backups
  pkg[mkfs.ext4]=e2fsprogs
  pkg[mkfs.xfs]=xfsprogs
  pkg[sfdisk]=fdisk
fi
if [ "$what" = bench ]; then
  pkg[hyperfine]=hyperfine
  # scripts/bench-repo.sh runs cairn's repository beside restic and borg
  pkg[restic]=restic
  pkg[borg]=borgbackup
fi

missing=()
for cmd in "${!pkg[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || [ -x "/sbin/$cmd" ] || missing+=("${pkg[$cmd]}")
done
# the C library's headers and libc.a, for the static build
[ -e /usr/include/stdlib.h ] || missing+=(libc6-dev)
[ ${#missing[@]} -eq 0 ] && exit 0
# unique, sorted
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
  echo "Go is not installed: install Go 1.26 or newer first" >&2
  exit 1
fi

line="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "missing packages: ${missing[*]}" >&2
  echo "run as root:  $line" >&2
  exit 1
fi
echo "installing: ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
