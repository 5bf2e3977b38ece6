#!/usr/bin/env bash
# What re-deriving the index costs `ward verify` (issue #29, point 5): one node loaded with the 100 Synthea patients by
# `ward import`, then `ward verify` with the index derived again from the sealed versions and compared (default) and
# with --skip-index (log and version digests only), alternating round after round on the same stopped node. Whole
# processes, wall-clock; prints the medians, their difference and the ratio.
# Usage: bench/verify.sh [ROUNDS]   (needs zstd)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
rounds=${1:-3}
make_work verify

build_tree
unpack_synthea "$work/synthea"
echo "== machine: $(machine)"
node="$work/node"
$ward init --data "$node" >/dev/null
$ward import --data "$node" "$work/synthea" >/dev/null
echo "== node: $(du -sh "$node" | cut -f1), $(sqlite3 "$node/ward.db" 'SELECT count(*) FROM resource') resources"

run() { # index|skip: seconds of one whole `ward verify`
    local start end
    start=$(date +%s.%N)
    if [ "$1" = index ]; then $ward verify --data "$node" >"$work/out" 2>&1; else $ward verify --data "$node" --skip-index >"$work/out" 2>&1; fi \
        || { cat "$work/out"; exit 1; }
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}

declare -A times
for r in $(seq "$rounds"); do
    for v in index skip; do
        t=$(run "$v")
        times[$v]+="$t "
        echo "round $r verify ($v): $t s"
    done
done
with=$(echo "${times[index]}" | median)
without=$(echo "${times[skip]}" | median)
echo "== ward verify, median of $rounds: with the index derived again $with s, --skip-index $without s," \
    "cost $(echo "$with - $without" | bc) s, ratio $(echo "scale=2; $with / $without" | bc)"
