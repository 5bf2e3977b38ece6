#!/usr/bin/env bash
# What sealing the audit log at rest costs (issue #29, point 9): this tree against BASE (default 9cfd76c, the tree
# before it, built in a git worktree), alternating round after round in the same run:
#  1. audit appends on a fresh node (Ward.Bench audit: ENTRIES from 64 concurrent requests, group commit; ENTRIES in
#     transactions of 1,000), entries/s;
#  2. audited reads on a fresh node holding the shared Synthea bundles and the first 10 patients: READS sequential
#     GET /fhir/Patient/{id} (Ward.Bench get: median and p99 latency; one client, one request at a time).
# Short by default (the machine is shared). Usage: bench/audit-seal.sh [ENTRIES] [READS] [ROUNDS] [BASE]   (needs zstd)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
entries=${1:-50000}
reads=${2:-2000}
rounds=${3:-2}
base=${4:-9cfd76c}
make_work audit-seal
port=8195

build_tree
build_base "$work/base" "$base"
declare -A wards=([after]="$ward" [before]="$base_ward")
declare -A benches=([after]="$bench" [before]="$base_bench")
unpack_synthea "$work/all"
mkdir -p "$work/synthea"
find "$work/all" -name '*.json' | sort | awk -F/ '$NF ~ /^0-/ {print; next} {if (n++ < 10) print}' | xargs -I{} cp {} "$work/synthea/"
echo "== machine: $(machine)"

appends() { # before|after: grouped and batched appends on a fresh node
    local node="$work/log-$1"
    rm -rf "$node"
    ${wards[$1]} init --data "$node" >/dev/null
    ${benches[$1]} audit "$node" "$entries" 64 | awk '/group commit/{g=$(NF-1)} /transactions of/{t=$(NF-1)} END{gsub(",","",g); gsub(",","",t); print g, t}'
}

readsof() { # before|after: a fresh node, the subset ingested, then sequential audited reads of one patient
    local node="$work/node-$1"
    rm -rf "$node"
    ${wards[$1]} init --data "$node" >/dev/null
    local token
    token=$(bench_token "${wards[$1]}" "$node")
    ${benches[$1]} serve "$node" "http://127.0.0.1:$port" >"$work/serve.log" 2>&1 &
    local pid=$!
    wait_ready "http://127.0.0.1:$port/health"
    WARD_TOKEN="$token" $bench ingest "http://127.0.0.1:$port/fhir" "$work/synthea" 2 >/dev/null
    WARD_TOKEN="$token" $bench ids "http://127.0.0.1:$port/fhir" Patient "$work/ids.txt" >/dev/null
    local url="http://127.0.0.1:$port/fhir/Patient/$(head -1 "$work/ids.txt")"
    WARD_TOKEN="$token" $bench get "$url" 200 >/dev/null
    WARD_TOKEN="$token" $bench get "$url" "$reads" | sed -E 's/.*median ([0-9.]+) ms, p99 ([0-9.]+) ms.*/\1 \2/'
    kill $pid; wait $pid 2>/dev/null || true
}

declare -A grouped batched median p99
for r in $(seq "$rounds"); do
    for v in after before; do
        read -r g b < <(appends "$v")
        read -r m p < <(readsof "$v")
        grouped[$v]+="$g "; batched[$v]+="$b "; median[$v]+="$m "; p99[$v]+="$p "
        echo "round $r $v: appends $g entries/s grouped, $b entries/s in transactions; reads median $m ms, p99 $p ms"
    done
done
for what in grouped batched median p99; do
    declare -n m=$what
    after=$(echo "${m[after]}" | median)
    before=$(echo "${m[before]}" | median)
    awk -v w="$what" -v a="$after" -v b="$before" 'BEGIN{printf "median %s: sealed %s, before %s, ratio %.3f\n", w, a, b, a/b}'
done
