#!/usr/bin/env bash
# What the hardening of issue 29 costs: ingest (the 100 Synthea patients as transactions, 4 clients), reads
# (GET /fhir/Patient/{id}) and searches (GET /fhir/Observation?patient={id}&_count=20) by a clinician related to every
# patient through a CareTeam, on the build before the issue (BASE, default the commit that opened it) and on this tree,
# alternating round after round on fresh nodes. Target: each ratio (this tree / base) >= 0.90. The cost of `ward verify`
# deriving the index again (point 5) is measured separately by bench/verify.sh.
# Usage: bench/hardening.sh [SECONDS] [ROUNDS] [BASE]   (needs zstd, wrk, openssl)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
seconds=${1:-10}
rounds=${2:-3}
base=${3:-9cfd76c}
make_work hardening
port=8196

build_tree
build_base "$work/base" "$base"
unpack_synthea "$work/synthea"
echo "== machine: $(machine)"
echo "== base $(git rev-parse --short "$base"), this tree $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')"

load() { # WARD BENCH NAME: a fresh node, the Synthea patients ingested (resources/s on stdout), a CareTeam per patient, a clinician's token
    local w=$1 b=$2 node="$work/node-$3" token
    rm -rf "$node"
    $w init --data "$node" >/dev/null
    token=$(bench_token "$w" "$node")
    DOTNET_gcServer=1 DOTNET_gcConcurrent=1 $w serve --data "$node" --urls "http://127.0.0.1:$port" >"$work/serve.log" 2>&1 &
    echo $! >"$work/pid"
    wait_ready "http://127.0.0.1:$port/health"
    WARD_TOKEN="$token" $b ingest "http://127.0.0.1:$port/fhir" "$work/synthea" 4 | sed -n 's/.* = \([0-9]*\) resources\/s.*/\1/p'
    WARD_TOKEN="$token" $b ids "http://127.0.0.1:$port/fhir" Patient "$work/ids.txt" >/dev/null
    # The clinician's record: a user is linked only to a record the node holds.
    curl -sf -o /dev/null -X PUT -H "Authorization: Bearer $token" -H 'Content-Type: application/fhir+json' "http://127.0.0.1:$port/fhir/Practitioner/bench-doc" \
        -d '{"resourceType":"Practitioner","id":"bench-doc"}'
    while read -r id; do
        curl -sf -o /dev/null -H "Authorization: Bearer $token" -H 'Content-Type: application/fhir+json' "http://127.0.0.1:$port/fhir/CareTeam" \
            -d "{\"resourceType\":\"CareTeam\",\"status\":\"active\",\"subject\":{\"reference\":\"Patient/$id\"},\"participant\":[{\"member\":{\"reference\":\"Practitioner/bench-doc\"}}]}"
    done <"$work/ids.txt"
    echo "bench-password-$RANDOM-$RANDOM" | $w users add --data "$node" --username doc --role clinician --practitioner Practitioner/bench-doc --password-stdin >/dev/null
    $w token --data "$node" --user doc --scope "user/*.rs" --minutes 60 >"$work/clinician"
}

declare -A ingest reads searches
for r in $(seq "$rounds"); do
    for v in after before; do
        if [ "$v" = after ]; then i=$(load "$ward" "$bench" "$v"); else i=$(load "$base_ward" "$base_bench" "$v"); fi
        read -r q qp qe < <(measure "/fhir/Patient/%s")
        read -r s sp se < <(measure "/fhir/Observation?patient=%s&_count=20")
        kill "$(cat "$work/pid")"; wait "$(cat "$work/pid")" 2>/dev/null || true
        [ "$qe" = 0 ] && [ "$se" = 0 ] || { echo "round $r $v: $qe + $se non-2xx responses"; exit 1; }
        ingest[$v]+="$i "
        reads[$v]+="$q "
        searches[$v]+="$s "
        echo "round $r $v: ingest $i resources/s, reads $q req/s (p99 $qp), searches $s req/s (p99 $sp)"
    done
done
for what in ingest reads searches; do
    declare -n m=$what
    after=$(echo "${m[after]}" | median)
    before=$(echo "${m[before]}" | median)
    awk -v w="$what" -v a="$after" -v b="$before" 'BEGIN{printf "median %s: after %d, before %d, ratio %.3f\n", w, a, b, a/b}'
done
