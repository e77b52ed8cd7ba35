#!/usr/bin/env bash
# Snapshot create / apply / delete through the cairn CLI on a fully allocated
# volume, side by side with bare `qemu-img snapshot -c/-a/-d` on a copy of the
# same file, in one run; then `snapshot list` and the tree drawing on a volume
# with 1,000 snapshots. Prints a Markdown table for docs/BENCHMARKS.md.
#
#   BENCH_SIZE=20G BENCH_RUNS=5 scripts/bench-snapshots.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
SIZE=${BENCH_SIZE:-20G}
RUNS=${BENCH_RUNS:-5}
SNAPS=${BENCH_SNAPSHOTS:-1000}
BIN=$PWD/bin/cairn
[ -x "$BIN" ] || { echo "build first: make build" >&2; exit 1; }
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/cairn-bench.XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" server --data "$work/data" --listen "127.0.0.1:$port" >"$work/server.log" 2>&1 &
spid=$!
cleanup() { kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
export CAIRN_SERVER=http://127.0.0.1:$port
for _ in $(seq 100); do [ -s "$work/data/admin.token" ] && break; sleep 0.1; done
export CAIRN_TOKEN=$(cat "$work/data/admin.token")
# The token is written before the server answers: wait until it does.
for _ in $(seq 100); do "$BIN" volume list >/dev/null 2>&1 && break; sleep 0.1; done
c() { "$BIN" "$@" >/dev/null; }

echo "filling a $SIZE volume (fully allocated)..." >&2
id=$("$BIN" volume create bench --size "$SIZE" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
vol="$work/data/volumes/$id.qcow2"
bytes=$(numfmt --from=iec "$SIZE")
chunk=$((256 << 20))
cmds=()
for ((off = 0; off < bytes; off += chunk)); do
  n=$(( bytes - off < chunk ? bytes - off : chunk ))
  cmds+=(-c "write -P 0xab $off $n")
done
qemu-io -f qcow2 "${cmds[@]}" "$vol" >/dev/null
ref="$work/ref.qcow2"
cp --sparse=never "$vol" "$ref"
sync

declare -A t
for op in create apply delete; do t[cairn_$op]=""; t[qemu_$op]=""; done
for i in $(seq "$RUNS"); do
  a=$(now); c snapshot create bench --name s$i; b=$(now); t[cairn_create]+="$(( (b-a)/1000000 ))"$'\n'
  a=$(now); qemu-img snapshot -c s$i "$ref"; b=$(now); t[qemu_create]+="$(( (b-a)/1000000 ))"$'\n'
  a=$(now); c snapshot apply bench@s$i; b=$(now); t[cairn_apply]+="$(( (b-a)/1000000 ))"$'\n'
  a=$(now); qemu-img snapshot -a s$i "$ref"; b=$(now); t[qemu_apply]+="$(( (b-a)/1000000 ))"$'\n'
  a=$(now); c snapshot delete bench@s$i; b=$(now); t[cairn_delete]+="$(( (b-a)/1000000 ))"$'\n'
  a=$(now); qemu-img snapshot -d s$i "$ref"; b=$(now); t[qemu_delete]+="$(( (b-a)/1000000 ))"$'\n'
done

echo "creating $SNAPS snapshots on a small volume..." >&2
c volume create many --size 64M
for i in $(seq "$SNAPS"); do c snapshot create many --name m$i --no-wait; done
last=$("$BIN" task list --volume many -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
c task wait "$last"
list="" tree=""
for i in $(seq 10); do
  a=$(now); c snapshot list many; b=$(now); list+="$(( (b-a)/1000000 ))"$'\n'
  a=$(now); c snapshot list many --tree; b=$(now); tree+="$(( (b-a)/1000000 ))"$'\n'
done

echo
echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr), $(qemu-img --version | head -1)"
echo "Volume: $SIZE fully allocated qcow2 (64 KiB clusters), $RUNS runs each, medians in ms"
echo
echo "| operation | cairn CLI (ms) | qemu-img (ms) | ratio |"
echo "|---|---|---|---|"
for op in create apply delete; do
  cm=$(printf '%s' "${t[cairn_$op]}" | median); qm=$(printf '%s' "${t[qemu_$op]}" | median)
  ratio=$(awk -v a="$cm" -v b="$qm" 'BEGIN { if (b > 0) printf "%.2f", a/b; else print "n/a" }')
  echo "| snapshot $op | $cm | $qm | $ratio |"
done
echo
echo "| $SNAPS snapshots on one volume | median (ms) |"
echo "|---|---|"
echo "| cairn snapshot list | $(printf '%s' "$list" | median) |"
echo "| cairn snapshot list --tree | $(printf '%s' "$tree" | median) |"
