#!/usr/bin/env bash
# What the audit log costs, and how fast it is.
#  1. Log appends on a fresh node: N entries from 64 concurrent requests (group commit), N more in transactions of 1,000,
#     then the latency of 10,000 inclusion proofs at the final size (Ward.Bench audit). Target: 20,000 entries/s; proofs
#     at 1,000,000 entries under 1 ms p99.
#  2. Audit on versus off in the same run: this tree against the tree before the audit log (BASE, default c1f2432, built
#     in a git worktree), the same Synthea ingest over HTTP and the same reads (wrk, GET /fhir/Patient/{id}), alternating
#     round after round on fresh nodes. Target: ratio at least 0.85 for both.
# Usage: bench/audit.sh [ENTRIES] [READ_SECONDS] [ROUNDS] [BASE]   (needs zstd and wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
entries=${1:-1000000}
seconds=${2:-20}
rounds=${3:-3}
base=${4:-c1f2432}
make_work audit
port=8194

build_tree
build_base "$work/base" "$base"
declare -A wards=([on]="$ward" [off]="$base_ward")
declare -A benches=([on]="$bench" [off]="$base_bench")
unpack_synthea "$work/synthea"
echo "== machine: $(machine)"

$ward init --data "$work/log" >/dev/null
$bench audit "$work/log" "$entries" 64

run() { # on|off: a fresh node, ingest over HTTP, then reads
    local node="$work/node-$1"
    rm -rf "$node"
    ${wards[$1]} init --data "$node" >/dev/null
    local token
    token=$(bench_token "${wards[$1]}" "$node")
    DOTNET_gcServer=1 DOTNET_gcConcurrent=1 ${benches[$1]} serve "$node" "http://127.0.0.1:$port" >"$work/serve.log" 2>&1 &
    local pid=$!
    wait_ready "http://127.0.0.1:$port/health"
    local ingest
    ingest=$(WARD_TOKEN="$token" $bench ingest "http://127.0.0.1:$port/fhir" "$work/synthea" 4 | sed -E 's/.*= ([0-9]+) resources.*/\1/')
    WARD_TOKEN="$token" $bench ids "http://127.0.0.1:$port/fhir" Patient "$work/ids.txt" >/dev/null
    WARD_TOKEN="$token" WARD_IDS="$work/ids.txt" wrk -t1 -c16 -d5s -s bench/reads.lua "http://127.0.0.1:$port" >/dev/null
    local reads
    reads=$(WARD_TOKEN="$token" WARD_IDS="$work/ids.txt" wrk -t1 -c16 -d"${seconds}s" --latency -s bench/reads.lua "http://127.0.0.1:$port" \
        | awk '/Requests\/sec/{r=$2} / 99%/{p=$2} /Non-2xx/{e=$NF} END{printf "%d %s %s\n", r, p, e+0}')
    kill $pid; wait $pid 2>/dev/null || true
    echo "$ingest $reads"
}

declare -A ingests reads
for r in $(seq "$rounds"); do
    for v in on off; do
        read -r i q p99 errors < <(run "$v")
        [ "$errors" = 0 ] || { echo "round $r audit $v: $errors non-2xx responses"; exit 1; }
        ingests[$v]+="$i "
        reads[$v]+="$q "
        echo "round $r audit $v: ingest $i resources/s, reads $q req/s (p99 $p99)"
    done
done
for what in ingest reads; do
    declare -n m=${what/ingest/ingests}
    on=$(echo "${m[on]}" | median)
    off=$(echo "${m[off]}" | median)
    awk -v w="$what" -v on="$on" -v off="$off" 'BEGIN{printf "median %s: audit on %d, off %d, ratio %.3f\n", w, on, off, on/off}'
done
