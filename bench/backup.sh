#!/usr/bin/env bash
# Backup and restore throughput and incremental size: `ward backup` against Debian's restic (0.14, repository v2 with
# its default zstd compression) backing up the same consistent snapshot of the database, in the same run.
# The node holds the 100 Synthea patients. Each round: a full backup to an empty target (ward: the whole command,
# online copy of the database included; restic: the copy sqlite3's .backup made, which it is given), a restore of it
# (ward: the whole restore command, checks included; restic: restore latest), then one new resource and an incremental
# backup of each (bytes added to the target / repository).
# Usage: bench/backup.sh [ROUNDS]   (needs restic and sqlite3: apt-get install restic sqlite3)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
rounds=${1:-3}
make_work backup-bench
build_tree
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$work/restic-cache"
now() { date +%s.%N; }
bytes() { du -sb "$1" | cut -f1; }
rate() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / s / 1048576 }'; }

echo "== machine: $(machine)"
echo "== restic: $(restic version | head -1)"
unpack_synthea "$work/synthea"
$ward init --data "$work/node" --name bench >/dev/null
$ward import --data "$work/node" "$work/synthea" | tail -1
cat > "$work/obs.json" <<'JSON'
{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]},"valueQuantity":{"value":170,"unit":"cm"}}
JSON

for round in $(seq 1 "$rounds"); do
    rm -rf "$work/target" "$work/repo" "$work/restored" "$work/restic-restored" "$work/snap.db"
    t0=$(now); $ward backup create --data "$work/node" --target "$work/target" >/dev/null; t1=$(now)
    size=$(stat -c %s "$work/node/ward.db")
    ward_backup=$(echo "$t1 - $t0" | bc)
    # restic cannot copy a live SQLite database consistently: the copy is made first (timed apart), then backed up.
    t0=$(now); sqlite3 "$work/node/ward.db" ".backup $work/snap.db"; t1=$(now)
    copy=$(echo "$t1 - $t0" | bc)
    restic init -q -r "$work/repo" >/dev/null
    t0=$(now); restic -q -r "$work/repo" backup "$work/snap.db" >/dev/null; t1=$(now)
    restic_backup=$(echo "$t1 - $t0" | bc)

    t0=$(now); $ward backup restore --target "$work/target" --data "$work/restored" --recovery-key "$work/node/recovery.key" >/dev/null; t1=$(now)
    ward_restore=$(echo "$t1 - $t0" | bc)
    t0=$(now); restic -q -r "$work/repo" restore latest --target "$work/restic-restored" >/dev/null; t1=$(now)
    restic_restore=$(echo "$t1 - $t0" | bc)

    $ward import --data "$work/node" "$work/obs.json" >/dev/null
    before=$(bytes "$work/target"); $ward backup create --data "$work/node" --target "$work/target" >/dev/null
    ward_incremental=$(( $(bytes "$work/target") - before ))
    sqlite3 "$work/node/ward.db" ".backup $work/snap.db"
    before=$(bytes "$work/repo"); restic -q -r "$work/repo" backup "$work/snap.db" >/dev/null
    restic_incremental=$(( $(bytes "$work/repo") - before ))

    echo "round $round: database $size bytes; stored full: ward $(bytes "$work/target") restic $(bytes "$work/repo")"
    echo "  backup  ward $(rate "$size" "$ward_backup") MiB/s (${ward_backup}s, consistent copy included)  restic $(rate "$size" "$restic_backup") MiB/s (${restic_backup}s, copy excluded)  sqlite3 .backup + restic $(rate "$size" "$(echo "$copy + $restic_backup" | bc)") MiB/s"
    echo "  restore ward $(rate "$size" "$ward_restore") MiB/s (${ward_restore}s)  restic $(rate "$size" "$restic_restore") MiB/s (${restic_restore}s)"
    echo "  incremental after one new resource: ward $ward_incremental bytes, restic $restic_incremental bytes"
done
