#!/usr/bin/env bash
# How long `restore --database` takes next to `db load`, and how long it keeps rows locked.
#
#   benches/db_locks.sh [REPORTS [SEED [BATCH]]]     (default: 200000 7 50000)
#
# Generates (once, cached under target/bench-data/) `lookmig generate --reports REPORTS --seed
# SEED` and its bundle, starts a throwaway cluster (`.ci/pg start`, unix socket, fsync off), and
# times, each on a fresh database loaded with the export:
#   load      lookmig db load EXPORT
#   restore   lookmig restore BUNDLE                       (one transaction)
#   batches   lookmig restore BUNDLE --batch-size BATCH
#   rollback  lookmig rollback BUNDLE                      (after the one-transaction restore)
# With one transaction every row it touches stays locked for the whole restore; in batches, for
# the longest batch. The per-batch figures come from `LOOKMIG_TIMING=1` (`timing: batch …`
# lines: time from the batch's first statement to its commit, and how long the curation tables
# were locked `IN SHARE ROW EXCLUSIVE MODE` for the newer-record check).
# LOOKMIG_BIN=PATH times that binary instead of building this tree (before/after figures).
# LOOKMIG_PG_OPTS passes server options to the cluster (e.g. "-c shared_buffers=2GB"; the
# default, 128MB, is initdb's, not a production server's).
# LOOKMIG_BENCH_KEEP=1 keeps the cluster running (its URL is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
reports=${1:-200000}
seed=${2:-7}
batch=${3:-50000}
if [[ -n ${LOOKMIG_BIN:-} ]]; then
  bin=$(realpath "$LOOKMIG_BIN")   # another build to compare with
else
  cargo build --release --quiet
  bin=$PWD/target/release/lookmig
fi
data=$PWD/target/bench-data
mkdir -p "$data"
export_file=$data/gen-$reports-s$seed.ndjson.zst
bundle=$data/gen-$reports-s$seed.bundle
[[ -f $export_file ]] || "$bin" generate --reports "$reports" --seed "$seed" -o "$export_file"
[[ -d $bundle ]] || "$bin" migrate "$export_file" -o "$bundle"
pgbin=${LOOKMIG_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
[[ -x $pgbin/psql ]] || { echo "db_locks.sh needs the PostgreSQL server binaries (apt-get install postgresql)" >&2; exit 1; }

pgdir=$(mktemp -d /tmp/lookmig-bench-pg.XXXXXX)
admin=$(.ci/pg start "$pgdir")
if [[ -z ${LOOKMIG_BENCH_KEEP:-} ]]; then
  trap '.ci/pg stop "$pgdir"' EXIT
else
  echo "cluster: $admin (stop with: .ci/pg stop $pgdir)"
fi
n=0
# A fresh, empty catalog database; sets DATABASE_URL.
fresh() {
  n=$((n + 1))
  "$pgbin/psql" -qX "$admin" -c "CREATE DATABASE bench$n" >/dev/null
  export DATABASE_URL=${admin%/postgres}/bench$n
  "$bin" db init >/dev/null
}
# Runs a command, prints its wall time in seconds; its stderr goes to $log.
log=$(mktemp)
timed() {
  local s e
  s=$(date +%s.%N)
  "$@" >/dev/null 2>"$log" || { cat "$log" >&2; return 1; }
  e=$(date +%s.%N)
  echo "$e - $s" | bc
}
# The longest `timing: batch` figures of the last run: "seconds_locked tables_locked batches".
batches() {
  awk '/^timing: batch/ {n++; s=$6; t=$12; if (s>m) m=s; if (t>tm) tm=t}
       END {printf "%.3f %.3f %d\n", m, tm, n}' "$log"
}

changes=$(jq -r '.counts.changes // empty' "$bundle/manifest.json" 2>/dev/null || true)
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}'), shared_buffers $("$pgbin/psql" -XAtqc 'SHOW shared_buffers' "$admin"), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "export: $export_file ($reports reports, seed $seed)${changes:+, $changes changes}"
printf '%-40s %10s %16s %16s\n' step seconds longest_lock_s tables_locked_s

fresh
load=$(timed "$bin" db load "$export_file")
printf '%-40s %10.1f %16s %16s\n' "db load" "$load" - -
one=$(timed env LOOKMIG_TIMING=1 "$bin" restore "$bundle")
read -r lock tables _ < <(batches)
printf '%-40s %10.1f %16.1f %16.1f\n' "restore (one transaction)" "$one" "$one" "$tables"
grep '^timing:' "$log" | sed 's/^/    /'
back=$(timed env LOOKMIG_TIMING=1 "$bin" rollback "$bundle")
printf '%-40s %10.1f %16.1f %16s\n' "rollback (one transaction)" "$back" "$back" -

fresh
"$bin" db load "$export_file" >/dev/null
inb=$(timed env LOOKMIG_TIMING=1 "$bin" restore "$bundle" --batch-size "$batch")
read -r lock tables count < <(batches)
printf '%-40s %10.1f %16.1f %16.1f\n' "restore --batch-size $batch ($count batches)" "$inb" "$lock" "$tables"
grep '^timing:' "$log" | sed 's/^/    /'
echo "restore / load: $(echo "scale=2; $one / $load" | bc) (one transaction), $(echo "scale=2; $inb / $load" | bc) (batches)"
rm -f "$log"
