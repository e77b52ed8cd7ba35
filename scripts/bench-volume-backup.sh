#!/usr/bin/env bash
# The volume backup benchmark: backups of a volume through the cairn server
# side by side with restic (`init --repository-version 2`) backing up the same
# image as a file, and cairn's backup export side by side with qemu-nbd serving
# the same data, on the same seeded disk image, in one run. Prints a Markdown
# table for docs/BENCHMARKS.md.
#
#   BENCH_VOL_SIZE=2G BENCH_RUNS=3 BENCH_OUT=/tmp/volume.md scripts/bench-volume-backup.sh
#   BENCH_VOL_SIZE=128M BENCH_RUNS=1 scripts/bench-volume-backup.sh
#
# Each run starts a cairn server on a fresh data directory (its embedded node,
# its default repository under DATA/repository) and a fresh restic repository.
# Untimed, the image (a sparse raw file from scripts/genimage: 30% holes, 40%
# compressible text, 30% random bytes) is imported as the volume `bench`.
# Then, for each tool in turn (the order rotates from run to run): a full
# backup, and the repository's size. 1% of the image is overwritten in
# scattered 64 KiB pieces (genimage -mutate on the raw file, which restic backs
# up again); the same pieces are written into the volume through its writable
# NBD export (`cairn volume export --writable`, qemu-io), which stays up: the
# incremental backup runs on a live, exported volume. The second backup is
# timed, with the repository's growth against the bytes changed (cairn: also
# the bytes it read and the bytes_added it reports). A restore of the latest
# backup, until it is on disk (checked against the changed image when
# BENCH_VERIFY=1, then deleted). Last, cairn's read-only export of that backup
# (`cairn backup export`): the time from the export command to a first 4 KiB
# read by qemu-io, then a sequential read of the whole export with
# `nbdcopy URI null:`, and the same read from qemu-nbd serving a qcow2 copy of
# the changed image (made untimed), in rotating order.
#
# Everything (image, server data, repositories, caches, restores) lives in one
# temporary directory under ${TMPDIR:-/tmp}, on one file system, removed at the
# end; it needs about 8 times the image size free. Nothing is dropped from the
# page cache. The file system is synced before each timed step, so that no tool
# pays for writing out what the one before it left in memory.
#
# Environment:
#   BENCH_VOL_SIZE  image size, default 2G
#   BENCH_RUNS      runs, default 3 (medians are reported)
#   BENCH_SEED      image seed, default 1
#   BENCH_VERIFY    1 (default) compares each restore, the volume after the
#                   writes and the backup export with the changed image
#   BENCH_OUT       also write the table to this file
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
SIZE=${BENCH_VOL_SIZE:-2G}
RUNS=${BENCH_RUNS:-3}
SEED=${BENCH_SEED:-1}
VERIFY=${BENCH_VERIFY:-1}
PIECE=65536 # the size of each changed piece (genimage -piece 64K)
GO=${GO:-go}
command -v "$GO" >/dev/null 2>&1 || GO=/usr/local/go/bin/go

die() { echo "bench-volume-backup: $*" >&2; exit 1; }
say() { echo "bench-volume-backup: $*" >&2; }

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS=$RUNS: want a positive number"
[[ $SEED =~ ^[0-9]+$ ]] || die "BENCH_SEED=$SEED: want a number"
size_bytes=$(numfmt --from=iec "$SIZE" 2>/dev/null) || die "BENCH_VOL_SIZE=$SIZE: want a size such as 2G or 128M"
[ "$size_bytes" -ge $((PIECE * 100)) ] || die "BENCH_VOL_SIZE=$SIZE: want at least 100 pieces of 64 KiB (6400K)"
for tool in restic qemu-img qemu-io qemu-nbd nbdcopy; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed: run scripts/deps.sh bench"
done
command -v python3 >/dev/null 2>&1 || die "python3 is needed to read the tools' JSON"

work=$(mktemp -d "${TMPDIR:-/tmp}/cairn-bench-volume.XXXXXX")
server_pid=""
qnbd_pid=""
# stop PID: ends a process this script started, and waits for it.
stop() { [ -z "$1" ] || { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }; }
trap 'stop "$server_pid"; stop "$qnbd_pid"; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
log=$work/tools.log
: >"$log"

# The image, its changed copy, the qcow2 copy for qemu-nbd, the volume, both
# repositories, both restores: about 8 images' worth at worst.
need=$((size_bytes * 8))
avail=$(df -P -B1 "$work" | awk 'NR == 2 {print $4}')
[ "$avail" -ge "$need" ] ||
  die "$(dirname "$work") has $((avail >> 20)) MiB free, the benchmark needs about $((need >> 20)) MiB (8x BENCH_VOL_SIZE=$SIZE): free some space, set TMPDIR to a larger file system or lower BENCH_VOL_SIZE"

say "building genimage and cairn..."
"$GO" build -o "$work/bin/genimage" ./scripts/genimage
GENIMAGE=$work/bin/genimage
CAIRN=$work/bin/cairn
GO=$GO scripts/build.sh "$CAIRN"
"$CAIRN" backup export --help >/dev/null 2>&1 ||
  die "this cairn has no 'backup export' command"

export RESTIC_PASSWORD=cairn-bench-password

# cairn's CLI and server, with their configuration and cache in the work
# directory; CAIRN_SERVER and CAIRN_TOKEN are set by server_start.
cn() { XDG_CACHE_HOME=$work/cache XDG_CONFIG_HOME=$work/config "$CAIRN" "$@"; }
# restic on the repository S/repo, its cache beside it.
rs() { # S ARGS...
  local s=$1
  shift
  RESTIC_REPOSITORY=$s/repo RESTIC_CACHE_DIR=$s/cache restic "$@"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
jget() { # FILE KEY: the top-level KEY of the JSON object in FILE
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

declare -A t=() # tool_op -> wall times in ms, one a line
declare -A b=() # tool_what -> byte counts, one a line
add() { t[$1]+="$2"$'\n'; }
addb() { b[$1]+="$2"$'\n'; }

# quiet CMD...: runs CMD, its output to the log; on failure shows the log's
# end (and the server's).
quiet() {
  local rc=0
  echo "+ $*" >>"$log"
  "$@" >>"$log" 2>&1 || rc=$?
  if [ $rc -ne 0 ]; then
    echo "bench-volume-backup: failed ($rc): $*" >&2
    tail -n 40 "$log" >&2
    if [ -s "$work/server.log" ]; then
      echo "bench-volume-backup: the server's log ends with:" >&2
      tail -n 20 "$work/server.log" >&2
    fi
    exit 1
  fi
}
# timed KEY CMD...: quiet CMD, its wall time in ms appended to t[KEY].
timed() {
  local key=$1 a z
  shift
  a=$(now)
  quiet "$@"
  z=$(now)
  add "$key" $(((z - a) / 1000000))
}
# The arguments after $1 in the order of run $1: rotated, so that no tool
# always goes first.
order() {
  local r=$1 i
  shift
  for ((i = 0; i < $#; i++)); do
    local k=$((((i + r) % $#) + 1))
    echo "${!k}"
  done
}
# wait_until SECONDS WHAT CMD...: runs CMD until it succeeds, for at most
# SECONDS.
wait_until() {
  local limit=$(($1 * 1000000000)) what=$2 a
  shift 2
  a=$(now)
  until "$@" >>"$log" 2>&1; do
    if [ $(($(now) - a)) -ge "$limit" ]; then
      tail -n 20 "$log" >&2
      die "$what: not ready after $((limit / 1000000000))s"
    fi
    sleep 0.05
  done
}
nbd_read4k() { qemu-io -r -f raw -c "read 0 4k" "$1"; }
check_same() { # FILE IMAGE WHAT
  [ "$VERIFY" = 1 ] || return 0
  cmp -s "$1" "$2" || die "$3 differs from the changed image"
}

# --- the server ---------------------------------------------------------------
# server_start DIR: a cairn server on the fresh data directory DIR, on a free
# port; returns once its default repository is ready.
repo_ready() {
  cn repository list -o json | python3 -c '
import json, sys
sys.exit(0 if any(r["name"] == "default" and r["state"] == "ready" for r in json.load(sys.stdin)) else 1)'
}
server_start() {
  local dir=$1 port i
  port=$(free_port)
  # Not through cn: $! must be the server's own process id.
  XDG_CACHE_HOME=$work/cache XDG_CONFIG_HOME=$work/config "$CAIRN" server --data "$dir" --listen "127.0.0.1:$port" \
    >>"$work/server.log" 2>&1 &
  server_pid=$!
  export CAIRN_SERVER=http://127.0.0.1:$port
  for ((i = 0; i < 600; i++)); do
    [ -s "$dir/admin.token" ] && break
    kill -0 "$server_pid" 2>/dev/null || { tail -n 20 "$work/server.log" >&2; die "the cairn server exited"; }
    sleep 0.05
  done
  [ -s "$dir/admin.token" ] || die "the cairn server wrote no $dir/admin.token in 30s"
  CAIRN_TOKEN=$(cat "$dir/admin.token")
  export CAIRN_TOKEN
  wait_until 60 "the default repository of the cairn server" repo_ready
}

# --- the operations -----------------------------------------------------------
# Each tool's state is one directory S: for cairn, S/data, the server's data
# directory (its repository: S/data/repository); for restic, S/repo and S/cache.
# cairn's backups print their JSON into S/backup.json.
op_backup() { # TOOL S IMAGE
  case $1 in
    cairn) cn backup create bench -o json >"$2/backup.json" ;;
    restic) rs "$2" backup "$3" ;;
  esac
}
# A restore is timed until the image is on disk, the file system synced.
op_restore() { # TOOL S OUTDIR
  mkdir -p "$3"
  case $1 in
    cairn) cn backup restore "$(jget "$2/backup.json" id)" --to-file "$3/restored.raw" -o json ;;
    restic) rs "$2" restore latest --target "$3" ;;
  esac && sync -f "$3"
}
repo_bytes() { # TOOL S
  case $1 in
    cairn) du -sb "$2/data/repository" | cut -f1 ;;
    restic) du -sb "$2/repo" | cut -f1 ;;
  esac
}
# The first byte: from `cairn backup export` to a first 4 KiB read by qemu-io.
# The export's URI goes to S/export.uri.
op_first_byte() { # S
  local s=$1 id uri a z
  id=$(jget "$s/backup.json" id)
  sync
  a=$(now)
  quiet op_export backup "$id" "$s/export.json"
  uri=$(jget "$s/export.json" uri)
  wait_until 60 "the export of backup $id" nbd_read4k "$uri"
  z=$(now)
  add cairn_first $(((z - a) / 1000000))
  echo "$uri" >"$s/export.uri"
}
# `cairn volume|backup export X`, its JSON into FILE.
op_export() { # volume|backup X FILE [FLAGS...]
  local what=$1 x=$2 file=$3
  shift 3
  cn "$what" export "$x" "$@" -o json >"$file"
}
# Writes the pieces of the image that differ from the original, PIECE bytes
# each, into DIR/OFFSET; prints the offsets.
changed_pieces() { # ORIGINAL CHANGED DIR
  mkdir -p "$3"
  python3 - "$1" "$2" "$3" "$PIECE" <<'EOF'
import os, sys
orig, changed, out, piece = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with open(orig, "rb") as a, open(changed, "rb") as b:
    off = 0
    while True:
        x, y = a.read(piece), b.read(piece)
        if not y:
            break
        if x != y:
            with open(os.path.join(out, str(off)), "wb") as f:
                f.write(y)
            print(off)
        off += len(y)
EOF
}
# Writes the pieces in DIR into the NBD export URI with qemu-io, up to 1000
# writes per invocation.
write_pieces() { # DIR URI OFFSET...
  local dir=$1 uri=$2 off
  shift 2
  local cmds=()
  for off in "$@"; do
    cmds+=(-c "write -q -s $dir/$off $off $PIECE")
    if [ ${#cmds[@]} -ge 2000 ]; then
      quiet qemu-io -f raw "${cmds[@]}" "$uri"
      cmds=()
    fi
  done
  [ ${#cmds[@]} -eq 0 ] || quiet qemu-io -f raw "${cmds[@]}" "$uri"
}

# --- the runs -----------------------------------------------------------------
say "generating the $SIZE image (seed $SEED)..."
mkdir -p "$work/base" "$work/img"
"$GENIMAGE" -size "$SIZE" -seed "$SEED" -out "$work/base/disk.raw"
img=$work/img/disk.raw # the same path in every run: restic backs it up
image_bytes=$(stat -c %s "$work/base/disk.raw")
changed_all=""
for ((r = 1; r <= RUNS; r++)); do
  say "run $r of $RUNS: full backup, 1% change through the export, incremental backup, restore, backup export"
  rm -rf "$work/run" "$img"
  cp --sparse=always "$work/base/disk.raw" "$img"
  mapfile -t tools < <(order "$r" cairn restic)
  c=$work/run/cairn
  s_restic=$work/run/restic
  mkdir -p "$c" "$s_restic"
  server_start "$c/data"
  quiet cn volume import bench "$img" --format raw -o json
  quiet rs "$s_restic" init --repository-version 2

  for tool in "${tools[@]}"; do
    s=$work/run/$tool
    sync
    timed "${tool}_full" op_backup "$tool" "$s" "$img"
    addb "${tool}_full" "$(repo_bytes "$tool" "$s")"
  done

  # 1% of the image changed in place, then the same pieces written into the
  # volume through its writable export, which stays up.
  changed=$("$GENIMAGE" -mutate "$img" -fraction 0.01 -piece 64K -seed $((SEED * 1000 + r)))
  changed_all+="$changed"$'\n'
  mapfile -t offsets < <(changed_pieces "$work/base/disk.raw" "$img" "$work/run/pieces")
  [ $((${#offsets[@]} * PIECE)) -eq "$changed" ] ||
    die "genimage changed $changed bytes, but ${#offsets[@]} pieces of 64 KiB differ"
  quiet op_export volume bench "$c/volume-export.json" --writable
  vuri=$(jget "$c/volume-export.json" uri)
  write_pieces "$work/run/pieces" "$vuri" "${offsets[@]}"
  if [ "$VERIFY" = 1 ]; then
    qemu-img compare -q -f raw -F raw "$img" "$vuri" >>"$log" 2>&1 ||
      die "the volume differs from the changed image after the writes through $vuri"
  fi
  rm -rf "$work/run/pieces"

  for tool in "${tools[@]}"; do
    s=$work/run/$tool
    before=$(repo_bytes "$tool" "$s")
    sync
    timed "${tool}_incr" op_backup "$tool" "$s" "$img"
    after=$(repo_bytes "$tool" "$s")
    addb "${tool}_growth" $((after - before))
    addb "${tool}_multiple" "$(awk -v g=$((after - before)) -v c="$changed" 'BEGIN { printf "%.3f", g / c }')"
    if [ "$tool" = cairn ]; then
      addb cairn_bytes_read "$(jget "$s/backup.json" bytes_read)"
      addb cairn_added "$(jget "$s/backup.json" bytes_added)"
    fi
  done

  for tool in "${tools[@]}"; do
    s=$work/run/$tool
    out=$work/run/out-$tool
    sync
    timed "${tool}_restore" op_restore "$tool" "$s" "$out"
    if [ "$VERIFY" = 1 ]; then
      mapfile -t files < <(find "$out" -type f)
      [ ${#files[@]} -eq 1 ] || die "$tool restored ${#files[@]} files, want 1"
      check_same "${files[0]}" "$img" "$tool's restore"
    fi
    rm -rf "$out"
  done

  # The backup export: first byte, then a sequential read beside qemu-nbd.
  op_first_byte "$c"
  curi=$(cat "$c/export.uri")
  if [ "$VERIFY" = 1 ]; then
    qemu-img compare -q -f raw -F raw "$img" "$curi" >>"$log" 2>&1 ||
      die "the backup export $curi differs from the changed image"
  fi
  quiet qemu-img convert -f raw -O qcow2 "$img" "$work/run/changed.qcow2"
  qport=$(free_port)
  qemu-nbd --read-only --persistent --format qcow2 --bind 127.0.0.1 --port "$qport" --export-name x \
    "$work/run/changed.qcow2" >>"$log" 2>&1 &
  qnbd_pid=$!
  quri=nbd://127.0.0.1:$qport/x
  wait_until 30 "qemu-nbd" nbd_read4k "$quri"
  for tool in $(order "$r" cairn qemu-nbd); do
    if [ "$tool" = cairn ]; then uri=$curi; else uri=$quri; fi
    sync
    timed "${tool}_read" nbdcopy "$uri" null:
  done
  stop "$qnbd_pid"
  qnbd_pid=""
  quiet cn backup unexport "$(jget "$c/backup.json" id)"
  quiet cn volume unexport bench
  stop "$server_pid"
  server_pid=""
  rm -rf "$work/run"
done
rm -f "$img"

# --- the table ----------------------------------------------------------------
# The row's values are medians of t (times, ms) or b (bytes, multiples),
# shown in a unit; the ratios are computed from the unrounded medians.
raw() { # sec|mib|mibs|times KEY: the median, or nothing
  case $1 in
    sec | mibs) printf '%s' "${t[$2]:-}" | median ;;
    *) printf '%s' "${b[$2]:-}" | median ;;
  esac
}
show() { # sec|mib|mibs|times VALUE: the value in its unit, or -
  [ -n "$2" ] || { echo -; return; }
  case $1 in
    sec) awk -v m="$2" 'BEGIN { printf "%.2f", m / 1000 }' ;;
    mib) awk -v m="$2" 'BEGIN { printf "%.1f", m / 1048576 }' ;;
    mibs) awk -v m="$2" -v n="$image_bytes" 'BEGIN { if (m > 0) printf "%.0f", n / 1048576 / (m / 1000); else print "-" }' ;;
    times) awk -v m="$2" 'BEGIN { printf "%.2fx", m }' ;;
  esac
}
met() { # VALUE ge|le LIMIT: yes, no, or n/a
  awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN {
    if (v == "" || v == "n/a") print "n/a"
    else if (op == "ge") print (v + 0 >= l + 0 ? "yes" : "no")
    else print (v + 0 <= l + 0 ? "yes" : "no") }'
}
# row LABEL UNIT KEY OTHER RATIO TARGET: cairn's median of KEY beside OTHER's
# (restic, qemu-nbd, or - for none); RATIO is other/cairn, cairn/other or -;
# TARGET "ge N" or "le N" on the ratio, "cairn le N" on cairn's value, or -.
row() {
  local label=$1 unit=$2 key=$3 other=$4 how=$5 target=$6 c o q="n/a" v m="-" tt="-" tg
  c=$(raw "$unit" "cairn_$key")
  o=""
  [ "$other" = - ] || o=$(raw "$unit" "${other}_$key")
  case $how in
    other/cairn) q=$(ratio "$o" "$c") ;;
    cairn/other) q=$(ratio "$o" "$c") ;; # mibs: cairn's throughput over the other's, from the times
    -) q="-" ;;
  esac
  if [ "$target" != - ]; then
    read -r -a tg <<<"$target"
    if [ "${tg[0]}" = cairn ]; then
      v=$(show "$unit" "$c")
      v=${v%x}
      tt="cairn $([ "${tg[1]}" = le ] && echo "≤" || echo "≥") ${tg[2]}$([ "$unit" = sec ] && echo " s" || echo x)"
      m=$(met "$v" "${tg[1]}" "${tg[2]}")
    else
      tt="${how/other/$other} $([ "${tg[0]}" = le ] && echo "≤" || echo "≥") ${tg[1]}x"
      m=$(met "$q" "${tg[0]}" "${tg[1]}")
    fi
  fi
  [ "$q" = "-" ] || [ "$q" = "n/a" ] || q=${q}x
  echo "| $label | $(show "$unit" "$c") | $(show "$unit" "$o") | $q | $tt | $m |"
}

changed_med=$(printf '%s' "$changed_all" | median)
dirty=""
if [ -n "$(git --no-optional-locks status --porcelain 2>/dev/null || true)" ]; then
  dirty=" (uncommitted changes)"
fi
cairn_version="cairn $(git rev-parse --short HEAD 2>/dev/null || echo '?')$dirty"
versions="$cairn_version, $(restic version | awk '{print "restic " $2}'), $(qemu-nbd --version | head -1 | awk '{print "qemu-nbd " $2}'), nbdcopy $(nbdcopy --version | awk 'NR == 1 {print $2}')"
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
fs=$(df -T "$work" | awk 'NR == 2 {print $2}')
table=$work/table.md
{
  echo "Machine: $(nproc) cores (${cpu:-unknown CPU}), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr), $fs file system; $versions"
  echo "Command: BENCH_VOL_SIZE=$SIZE BENCH_RUNS=$RUNS BENCH_SEED=$SEED scripts/bench-volume-backup.sh"
  echo "Image: $SIZE ($image_bytes bytes, seed $SEED): 30% holes, 40% text, 30% random; 1% change = $changed_med bytes in 64 KiB pieces, written into the volume through its writable NBD export, which stays up during the incremental backup."
  echo "Medians of $RUNS run$([ "$RUNS" -eq 1 ] || echo s); page cache not dropped. cairn: a server with its embedded node and default repository; restic: repository version 2, compression auto, backing up the raw image file; qemu-nbd: a qcow2 copy of the changed image."
  echo "Ratios: restic/cairn for times and sizes (above 1, cairn is faster or smaller), cairn/qemu-nbd for throughput (above 1, cairn is faster)."
  echo
  echo "| measure | cairn | restic / qemu-nbd | ratio | target | met? |"
  echo "|---|---|---|---|---|---|"
  row "full backup of $SIZE (s)" sec full restic other/cairn -
  row "repository after the full backup (MiB)" mib full restic other/cairn -
  row "incremental backup after a 1% change, volume exported (s)" sec incr restic other/cairn "ge 20"
  row "read by cairn's incremental backup (MiB)" mib bytes_read - - -
  row "added by cairn's incremental backup (MiB)" mib added - - -
  row "repository growth (MiB)" mib growth restic other/cairn -
  row "growth / changed bytes" times multiple restic other/cairn "cairn le 4"
  row "restore of the latest backup, synced to disk (s)" sec restore restic other/cairn "ge 3"
  row "export, sequential read with nbdcopy (MiB/s): cairn backup export / qemu-nbd" mibs read qemu-nbd cairn/other "ge 0.8"
  row "export, first byte: backup export to a 4 KiB read (s)" sec first - - "cairn le 2"
  echo
  echo "Each run, in order (s; cairn and restic take turns going first):"
  echo
  for key in full incr restore; do
    echo "- $key: cairn $(runs "cairn_$key"); restic $(runs "restic_$key")"
  done
} >"$table"
echo
cat "$table"
if [ -n "${BENCH_OUT:-}" ]; then
  cp "$table" "$BENCH_OUT"
  say "table written to $BENCH_OUT"
fi
