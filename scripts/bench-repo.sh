#!/usr/bin/env bash
# The repository benchmark: cairn's backup repository side by side with restic
# (compressed format, `init --repository-version 2`) and borg 1.2, on the same
# seeded disk image, in one run. Prints a Markdown table for docs/BENCHMARKS.md.
#
#   BENCH_REPO_SIZE=2G BENCH_RUNS=3 BENCH_OUT=/tmp/repo.md scripts/bench-repo.sh
#   BENCH_TOOLS="restic borg" BENCH_REPO_SIZE=64M BENCH_RUNS=1 scripts/bench-repo.sh
#
# Each run, for every tool in turn (the order rotates from run to run), on a
# fresh repository: a full backup of the image (a sparse raw file from
# scripts/genimage: 30% holes, 40% compressible text, 30% random bytes), its
# size; 1% of the image overwritten in scattered 64 KiB pieces and a second
# backup, the repository's growth against the bytes changed; a restore of the
# latest backup, until it is on disk (checked against the image, then
# deleted). Then, on one repository per tool holding BENCH_PRUNE_BACKUPS (30)
# backups of an image, each after a 1% change, copied afresh for every run:
# forget every other backup and prune, in one command where the tool has one
# (cairn, restic: forget --prune; borg: delete, then compact), timed together.
#
# Everything (image, repositories, the tools' caches, restores) lives in one
# temporary directory under ${TMPDIR:-/tmp}, on one file system, removed at the
# end. Every tool reads a warm image: it is read into the page cache before
# each timed backup (borg drops the files it has read from the page cache, so
# the tool after it would otherwise read the image from the disk).
# The file system is synced before each timed step, so that no tool pays for
# writing out what the one before it left in memory.
#
# Environment:
#   BENCH_TOOLS          tools to run, default "cairn restic borg"
#   BENCH_REPO_SIZE      image size, default 2G
#   BENCH_RUNS           runs, default 3 (medians are reported)
#   BENCH_PRUNE_SIZE     image of the forget+prune test, default BENCH_REPO_SIZE
#   BENCH_PRUNE_BACKUPS  backups before forget+prune, default 30
#   BENCH_SEED           image seed, default 1
#   BENCH_VERIFY         1 (default) compares each restore with the image
#   BENCH_OUT            also write the table to this file
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
SIZE=${BENCH_REPO_SIZE:-2G}
RUNS=${BENCH_RUNS:-3}
PRUNE_SIZE=${BENCH_PRUNE_SIZE:-$SIZE}
PRUNE_BACKUPS=${BENCH_PRUNE_BACKUPS:-30}
SEED=${BENCH_SEED:-1}
VERIFY=${BENCH_VERIFY:-1}
read -r -a TOOLS <<<"${BENCH_TOOLS:-cairn restic borg}"
GO=${GO:-go}
command -v "$GO" >/dev/null 2>&1 || GO=/usr/local/go/bin/go

die() { echo "bench-repo: $*" >&2; exit 1; }
say() { echo "bench-repo: $*" >&2; }

[ ${#TOOLS[@]} -gt 0 ] || die "BENCH_TOOLS is empty"
for tool in "${TOOLS[@]}"; do
  case $tool in
    cairn) ;;
    restic | borg) command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed: run scripts/deps.sh bench" ;;
    *) die "unknown tool '$tool' in BENCH_TOOLS (cairn, restic, borg)" ;;
  esac
done
has() { local t; for t in "${TOOLS[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS=$RUNS: want a positive number"
[[ $PRUNE_BACKUPS =~ ^[1-9][0-9]*$ ]] || die "BENCH_PRUNE_BACKUPS=$PRUNE_BACKUPS: want a positive number"
command -v python3 >/dev/null 2>&1 || die "python3 is needed to read the tools' JSON"

work=$(mktemp -d "${TMPDIR:-/tmp}/cairn-bench-repo.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
log=$work/tools.log
: >"$log"

say "building genimage$(has cairn && echo " and cairn")..."
"$GO" build -o "$work/bin/genimage" ./scripts/genimage
GENIMAGE=$work/bin/genimage
CAIRN=$work/bin/cairn
if has cairn; then
  GO=$GO scripts/build.sh "$CAIRN"
  "$CAIRN" repo --help >/dev/null 2>&1 ||
    die "this cairn has no 'repo' command; run the other tools alone with BENCH_TOOLS=\"restic borg\""
fi

# One password for all; the tools never prompt.
export CAIRN_PASSWORD=cairn-bench-password
export RESTIC_PASSWORD=cairn-bench-password
export BORG_PASSPHRASE=cairn-bench-password
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes # the forget+prune repositories are copies
export BORG_CHECK_I_KNOW_WHAT_I_AM_DOING=NO
export BORG_DELETE_I_KNOW_WHAT_I_AM_DOING=NO

# Each tool's state is one directory S: S/repo, the repository, and the
# tool's local cache beside it (restic's cache, borg's base directory with its
# cache and security data, cairn's XDG cache), so that a copy of S is a
# consistent repository-and-cache pair.
tool_run() { # TOOL S ARGS...
  local tool=$1 s=$2
  shift 2
  case $tool in
    cairn) XDG_CACHE_HOME=$s/cache XDG_CONFIG_HOME=$s/config CAIRN_REPO=$s/repo "$CAIRN" "$@" ;;
    restic) RESTIC_REPOSITORY=$s/repo RESTIC_CACHE_DIR=$s/cache restic "$@" ;;
    borg) BORG_BASE_DIR=$s/base borg "$@" ;;
  esac
}

op_init() { # TOOL S
  mkdir -p "$2"
  case $1 in
    cairn) tool_run cairn "$2" repo init --repo "$2/repo" ;;
    restic) tool_run restic "$2" init --repository-version 2 ;;
    borg) tool_run borg "$2" init --encryption=repokey-blake2 "$2/repo" ;;
  esac
}

op_backup() { # TOOL S IMAGE NAME (NAME: the archive's, for borg)
  case $1 in
    cairn) tool_run cairn "$2" repo backup --repo "$2/repo" --image "$3" ;;
    restic) tool_run restic "$2" backup "$3" ;;
    borg) tool_run borg "$2" create --compression zstd,3 "$2/repo::$4" "$3" ;;
  esac
}

# A restore is timed until the image is on disk: cairn syncs its output
# before renaming it into place, restic and borg leave that to the kernel, so
# the file system is synced after each tool.
op_restore() { # TOOL S OUTDIR NAME (NAME: the latest archive, for borg)
  mkdir -p "$3"
  case $1 in
    cairn) tool_run cairn "$2" repo restore --repo "$2/repo" latest --to-file "$3/restored.raw" ;;
    restic) tool_run restic "$2" restore latest --target "$3" ;;
    borg) (cd "$3" && tool_run borg "$2" extract --sparse "$2/repo::$4") ;;
  esac && sync -f "$3"
}

# Prints the ids (borg: names) of the backups, oldest first; messages go to
# the log.
op_list() { # TOOL S
  local json
  case $1 in
    cairn) json=$(tool_run cairn "$2" repo backups --repo "$2/repo" --output json 2>>"$log") || return ;;
    restic) json=$(tool_run restic "$2" snapshots --json 2>>"$log") || return ;;
    borg) json=$(tool_run borg "$2" list --json "$2/repo" 2>>"$log") || return ;;
  esac
  python3 -c '
import json, sys
from datetime import datetime
d = json.loads(sys.stdin.read())
if isinstance(d, dict):
    d = d["archives"]  # borg: {"archives": [{"name": ..., "time": ...}]}
# cairn: created_at; restic and borg: time
def when(b):
    t = (b.get("created_at") or b["time"]).replace("Z", "+00:00")
    if "." in t:  # at most microseconds for fromisoformat
        head, frac = t.split(".", 1)
        digits = len(frac) - len(frac.lstrip("0123456789"))
        t = head + "." + frac[:min(digits, 6)] + frac[digits:]
    return datetime.fromisoformat(t).timestamp()
for b in sorted(d, key=when):
    print(b.get("name") or b["id"])
' <<<"$json"
}

op_forget_prune() { # TOOL S ID...
  local tool=$1 s=$2
  shift 2
  case $tool in
    cairn) tool_run cairn "$s" repo forget --repo "$s/repo" --prune "$@" ;;
    restic) tool_run restic "$s" forget --prune "$@" ;;
    borg) tool_run borg "$s" delete "$s/repo" "$@" && tool_run borg "$s" compact "$s/repo" ;;
  esac
}

repo_bytes() { du -sb "$1/repo" | cut -f1; }

declare -A t=() # tool_op -> wall times in ms, one a line
declare -A b=() # tool_what -> byte counts, one a line
add() { t[$1]+="$2"$'\n'; }
addb() { b[$1]+="$2"$'\n'; }

# quiet CMD...: runs CMD, its output to the log; on failure shows the log's end.
quiet() {
  local rc=0
  echo "+ $*" >>"$log"
  "$@" >>"$log" 2>&1 || rc=$?
  if [ $rc -ne 0 ]; then
    echo "bench-repo: failed ($rc): $*" >&2
    tail -n 40 "$log" >&2
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
# The tools in the order of run $1: rotated, so that no tool always goes first.
order() {
  local n=${#TOOLS[@]} i
  for ((i = 0; i < n; i++)); do echo "${TOOLS[$(((i + $1) % n))]}"; done
}
# warm FILE: reads FILE into the page cache (untimed).
warm() { cat "$1" >/dev/null; }
check_restore() { # OUTDIR IMAGE TOOL
  [ "$VERIFY" = 1 ] || return 0
  local files
  mapfile -t files < <(find "$1" -type f)
  [ ${#files[@]} -eq 1 ] || die "$3 restored ${#files[@]} files, want 1"
  cmp -s "${files[0]}" "$2" || die "$3 restored an image that differs from the one backed up"
}

# --- full, incremental, restore ---------------------------------------------
say "generating the $SIZE image (seed $SEED)..."
mkdir -p "$work/base" "$work/img"
"$GENIMAGE" -size "$SIZE" -seed "$SEED" -out "$work/base/disk.raw"
img=$work/img/disk.raw # the same path in every run, for every tool
image_bytes=$(stat -c %s "$work/base/disk.raw")
changed_all=""
for ((r = 1; r <= RUNS; r++)); do
  say "run $r of $RUNS: full backup, 1% change, incremental backup, restore"
  rm -rf "$work/run" "$img"
  cp --sparse=always "$work/base/disk.raw" "$img"
  mapfile -t tools < <(order "$r")
  for tool in "${tools[@]}"; do
    quiet op_init "$tool" "$work/run/$tool"
  done
  sync
  for tool in "${tools[@]}"; do
    s=$work/run/$tool
    warm "$img"
    sync
    timed "${tool}_full" op_backup "$tool" "$s" "$img" full
    addb "${tool}_full" "$(repo_bytes "$s")"
  done
  changed=$("$GENIMAGE" -mutate "$img" -fraction 0.01 -piece 64K -seed $((SEED * 1000 + r)))
  changed_all+="$changed"$'\n'
  sync
  for tool in "${tools[@]}"; do
    s=$work/run/$tool
    before=$(repo_bytes "$s")
    warm "$img"
    sync
    timed "${tool}_incr" op_backup "$tool" "$s" "$img" incr
    after=$(repo_bytes "$s")
    addb "${tool}_growth" $((after - before))
    addb "${tool}_multiple" "$(awk -v g=$((after - before)) -v c="$changed" 'BEGIN { printf "%.3f", g / c }')"
  done
  for tool in "${tools[@]}"; do
    s=$work/run/$tool
    out=$work/run/out-$tool
    sync
    timed "${tool}_restore" op_restore "$tool" "$s" "$out" incr
    check_restore "$out" "$img" "$tool"
    rm -rf "$out"
  done
  rm -rf "$work/run"
done
rm -f "$img"

# --- forget every other backup + prune ----------------------------------------
say "forget+prune: $PRUNE_BACKUPS backups of a $PRUNE_SIZE image per tool, each after a 1% change..."
mkdir -p "$work/pimg"
pimg=$work/pimg/disk.raw
"$GENIMAGE" -size "$PRUNE_SIZE" -seed $((SEED + 1)) -out "$pimg"
for tool in "${TOOLS[@]}"; do
  quiet op_init "$tool" "$work/template/$tool"
done
for ((i = 1; i <= PRUNE_BACKUPS; i++)); do
  quiet "$GENIMAGE" -mutate "$pimg" -fraction 0.01 -piece 64K -seed $((SEED * 1000 + 500 + i))
  for tool in "${TOOLS[@]}"; do
    warm "$pimg"
    sync
    timed "${tool}_small" op_backup "$tool" "$work/template/$tool" "$pimg" "$(printf 'p%03d' "$i")"
  done
done
forgotten=0
for ((r = 1; r <= RUNS; r++)); do
  say "run $r of $RUNS: forget every other backup, prune"
  mapfile -t tools < <(order "$r")
  for tool in "${tools[@]}"; do
    rm -rf "$work/prune"
    mkdir -p "$work/prune"
    s=$work/prune/$tool
    cp -a "$work/template/$tool" "$s"
    sync
    ids=$(op_list "$tool" "$s")
    mapfile -t all <<<"$ids"
    [ ${#all[@]} -eq "$PRUNE_BACKUPS" ] || die "$tool lists ${#all[@]} backups, want $PRUNE_BACKUPS"
    del=()
    for ((j = 0; j < ${#all[@]}; j += 2)); do del+=("${all[$j]}"); done
    forgotten=${#del[@]}
    addb "${tool}_before_prune" "$(repo_bytes "$s")"
    timed "${tool}_prune" op_forget_prune "$tool" "$s" "${del[@]}"
    addb "${tool}_after_prune" "$(repo_bytes "$s")"
    ids=$(op_list "$tool" "$s")
    mapfile -t left <<<"$ids"
    [ ${#left[@]} -eq $((PRUNE_BACKUPS - forgotten)) ] ||
      die "$tool keeps ${#left[@]} backups after forget, want $((PRUNE_BACKUPS - forgotten))"
  done
  rm -rf "$work/prune"
done

# --- the table ----------------------------------------------------------------
# The row's values are medians of t (times, ms) or b (bytes, multiples),
# shown in a unit; the ratios are computed from the unrounded medians.
raw() { # sec|mib|times KEY: the median, or nothing
  if [ "$1" = sec ]; then printf '%s' "${t[$2]:-}" | median; else printf '%s' "${b[$2]:-}" | median; fi
}
show() { # sec|mib|times VALUE: the value in its unit, or -
  [ -n "$2" ] || { echo -; return; }
  case $1 in
    sec) awk -v m="$2" 'BEGIN { printf "%.2f", m / 1000 }' ;;
    mib) awk -v m="$2" 'BEGIN { printf "%.1f", m / 1048576 }' ;;
    times) awk -v m="$2" 'BEGIN { printf "%.2fx", m }' ;;
  esac
}
row() { # LABEL sec|mib|times KEY
  local label=$1 unit=$2 key=$3 c r g
  c=$(raw "$unit" "cairn_$key")
  r=$(raw "$unit" "restic_$key")
  g=$(raw "$unit" "borg_$key")
  echo "| $label | $(show "$unit" "$c") | $(show "$unit" "$r") | $(show "$unit" "$g") | $(ratio "$r" "$c") | $(ratio "$g" "$c") |"
}

changed_med=$(printf '%s' "$changed_all" | median)
version() {
  case $1 in
    cairn) echo "cairn $(git rev-parse --short HEAD 2>/dev/null || echo '?')$([ -n "$(git status --porcelain 2>/dev/null)" ] && echo ' (uncommitted changes)')" ;;
    restic) restic version | awk '{print "restic " $2}' ;;
    borg) borg --version ;;
  esac
}
versions=$(for tool in "${TOOLS[@]}"; do version "$tool"; done | paste -sd, - | sed 's/,/, /g')
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
fs=$(df -T "$work" | awk 'NR == 2 {print $2}')
table=$work/table.md
{
  echo "Machine: $(nproc) cores (${cpu:-unknown CPU}), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr), $fs file system; $versions"
  echo "Command: BENCH_TOOLS=\"${TOOLS[*]}\" BENCH_REPO_SIZE=$SIZE BENCH_RUNS=$RUNS BENCH_PRUNE_SIZE=$PRUNE_SIZE BENCH_PRUNE_BACKUPS=$PRUNE_BACKUPS BENCH_SEED=$SEED scripts/bench-repo.sh"
  echo "Image: $SIZE ($image_bytes bytes, seed $SEED): 30% holes, 40% text, 30% random; 1% change = $changed_med bytes in 64 KiB pieces."
  echo "Medians of $RUNS run$([ "$RUNS" -eq 1 ] || echo s); page cache not dropped. restic: repository version 2, compression auto; borg: repokey-blake2, zstd,3."
  echo "Ratios are tool/cairn: above 1, cairn is faster (times) or smaller (sizes)."
  echo
  echo "| operation | cairn | restic | borg | restic/cairn | borg/cairn |"
  echo "|---|---|---|---|---|---|"
  row "full backup of $SIZE (s)" sec full
  row "repository after the full backup (MiB)" mib full
  row "incremental backup after a 1% change (s)" sec incr
  row "repository growth (MiB)" mib growth
  row "growth / changed bytes" times multiple
  row "restore of the latest backup, synced to disk (s)" sec restore
  row "incremental backup of $PRUNE_SIZE after a 1% change (s, median of $PRUNE_BACKUPS)" sec small
  row "forget $forgotten of $PRUNE_BACKUPS backups + prune (s)" sec prune
  row "repository before forget+prune (MiB)" mib before_prune
  row "repository after forget+prune (MiB)" mib after_prune
  echo
  echo "Each run, in order (s; the tools take turns going first):"
  echo
  for key in full incr restore prune; do
    line=""
    for tool in "${TOOLS[@]}"; do line+="; $tool $(runs "${tool}_$key")"; done
    echo "- $key: ${line#; }"
  done
} >"$table"
echo
cat "$table"
if [ -n "${BENCH_OUT:-}" ]; then
  cp "$table" "$BENCH_OUT"
  say "table written to $BENCH_OUT"
fi
