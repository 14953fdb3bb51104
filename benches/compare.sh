#!/usr/bin/env bash
# Times lookmig against the decompression floor, a plain jq pass and a DuckDB script doing part of
# the job, on generated exports.
#
#   benches/compare.sh [REPORTS ...]      (default: 200000)
#
# For each size: generates (once, cached under target/bench-data/) a synthetic export of that
# many reports with `lookmig generate --seed 1`, then times, in one run on this machine:
#   floor    zstd -dc FILE >/dev/null              (the decompression floor)
#   plan     lookmig plan FILE
#   migrate  lookmig migrate FILE -o BUNDLE
#   restore  lookmig restore BUNDLE --onto FILE -o OUT.ndjson.zst
#   verify   lookmig verify BUNDLE --export FILE   (checksums and the conservation law)
#   jq       zstd -dc FILE | jq -c . >/dev/null    (the everyday peer)
#   duckdb   python3 ../shared/peers/duckdb_core.py PLAIN OUT 2   (the SQL peer, on the export
#            decompressed beforehand, untimed; skipped with a note where `import duckdb` fails)
# and prints each time, its ratio to the floor, MB/s of uncompressed input and peak RSS
# (/usr/bin/time -v). Rows are also appended to target/bench-data/results.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
peers=${LOOKMIG_PEERS:-$PWD/../shared/peers}
for tool in zstd jq /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "compare.sh needs $tool (apt-get install zstd jq time)" >&2; exit 1; }
done
cargo build --release --quiet
bin=$PWD/target/release/lookmig
data=$PWD/target/bench-data
mkdir -p "$data"
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(200000)

# Runs a command under /usr/bin/time -v; prints "seconds peak_kib".
measure() {
  local log
  log=$(mktemp)
  /usr/bin/time -v -o "$log" bash -c "$1" >/dev/null 2>"$log.err" || { cat "$log.err" >&2; rm -f "$log" "$log.err"; return 1; }
  awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,t,":"); s=(n==3)?t[1]*3600+t[2]*60+t[3]:t[1]*60+t[2]}
              /Maximum resident set size/ {m=$2} END {printf "%.3f %d\n", s, m}' "$log"
  rm -f "$log" "$log.err"
}

duckdb=yes
python3 -c 'import duckdb' 2>/dev/null && [ -f "$peers/duckdb_core.py" ] || {
  duckdb=
  echo "note: no DuckDB row (needs python3 with duckdb, pip install duckdb, and $peers/duckdb_core.py)"
}
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
printf '%-9s %-8s %10s %9s %10s %10s\n' reports step seconds x_floor MB/s peak_MiB
for n in "${sizes[@]}"; do
  file=$data/gen-$n.ndjson.zst
  [ -f "$file" ] || "$bin" generate --reports "$n" --seed 1 -o "$file" >/dev/null
  bytes=$(zstd -dc "$file" | wc -c)
  rm -rf "$data/bundle-$n" "$data/out-$n.ndjson.zst"
  declare -A secs=() rss=()
  read -r secs[floor] rss[floor] < <(measure "zstd -dc '$file' >/dev/null")
  read -r secs[plan] rss[plan] < <(measure "'$bin' plan '$file'")
  read -r secs[migrate] rss[migrate] < <(measure "'$bin' migrate '$file' -o '$data/bundle-$n'")
  read -r secs[restore] rss[restore] < <(measure "'$bin' restore '$data/bundle-$n' --onto '$file' -o '$data/out-$n.ndjson.zst'")
  read -r secs[verify] rss[verify] < <(measure "'$bin' verify '$data/bundle-$n' --export '$file'")
  read -r secs[jq] rss[jq] < <(measure "zstd -dc '$file' | jq -c . >/dev/null")
  steps=(floor plan migrate restore verify jq)
  if [ -n "$duckdb" ]; then
    zstd -dcf "$file" -o "$data/plain-$n.ndjson" 2>/dev/null
    read -r secs[duckdb] rss[duckdb] < <(measure "python3 '$peers/duckdb_core.py' '$data/plain-$n.ndjson' '$data/duck-$n.ndjson' $(nproc)")
    rm -f "$data/plain-$n.ndjson" "$data/duck-$n.ndjson"
    steps+=(duckdb)
  fi
  for step in "${steps[@]}"; do
    s=${secs[$step]}
    row=$(awk -v n="$n" -v st="$step" -v s="$s" -v f="${secs[floor]}" -v b="$bytes" -v m="${rss[$step]}" \
      'BEGIN {printf "%-9s %-8s %10.2f %9.1f %10.0f %10.0f", n, st, s, s/f, b/1e6/s, m/1024}')
    echo "$row"
    printf '%s\t%s\n' "$(date -u +%FT%TZ)" "$row" >>"$data/results.tsv"
  done
  echo "load average after $n: $(cut -d' ' -f1-3 /proc/loadavg)"
  unset secs rss
  rm -rf "$data/bundle-$n" "$data/out-$n.ndjson.zst"
done
