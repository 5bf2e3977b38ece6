#!/usr/bin/env bash
# What the access policy costs: reads (GET /fhir/Patient/{id}) and searches (GET /fhir/Observation?patient={id}&_count=20)
# by a clinician, under the shipped policy (care relationship through a CareTeam for every patient, Consent and labels
# checked, searches filtered in SQL) against an allow-all policy (the node's policy.yaml makes the clinician role a
# service role that sees every confidentiality: no relationship, no label filter), the same build, alternating round
# after round on fresh nodes loaded with the same 100 Synthea patients. Target: ratio >= 0.90.
# Usage: bench/policy.sh [SECONDS] [ROUNDS]   (needs zstd, wrk, openssl)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
seconds=${1:-20}
rounds=${2:-3}
make_work policy
port=8195

build_tree
# The allow-all policy: the shipped one with the clinician's access kind "service" and no confidentiality cap.
awk '/^  clinician:/{c=1} /^  nurse:/{c=0} c&&/access: care/{print "    access: service"; print "    max-confidentiality: V"; next} c&&/break-glass: true/{next} {print}' \
    src/Ward.Core/Policy/policy.yaml >"$work/allow-all.yaml"
unpack_synthea "$work/synthea"
echo "== machine: $(machine)"

load() { # on|off: a fresh node with the Synthea patients, a CareTeam per patient, and a clinician's token in $work/clinician
    local node="$work/node-$1"
    rm -rf "$node"
    $ward init --data "$node" >/dev/null
    if [ "$1" = off ]; then cp "$work/allow-all.yaml" "$node/policy.yaml"; $ward policy check --data "$node" >/dev/null; fi
    local token
    token=$(bench_token "$ward" "$node")
    DOTNET_gcServer=1 DOTNET_gcConcurrent=1 $ward serve --data "$node" --urls "http://127.0.0.1:$port" >"$work/serve.log" 2>&1 &
    echo $! >"$work/pid"
    wait_ready "http://127.0.0.1:$port/health"
    WARD_TOKEN="$token" $bench ingest "http://127.0.0.1:$port/fhir" "$work/synthea" 4 >/dev/null
    WARD_TOKEN="$token" $bench ids "http://127.0.0.1:$port/fhir" Patient "$work/ids.txt" >/dev/null
    # The clinician's record: a user is linked only to a record the node holds.
    curl -sf -o /dev/null -X PUT -H "Authorization: Bearer $token" -H 'Content-Type: application/fhir+json' "http://127.0.0.1:$port/fhir/Practitioner/bench-doc" \
        -d '{"resourceType":"Practitioner","id":"bench-doc"}'
    while read -r id; do
        curl -sf -o /dev/null -H "Authorization: Bearer $token" -H 'Content-Type: application/fhir+json' "http://127.0.0.1:$port/fhir/CareTeam" \
            -d "{\"resourceType\":\"CareTeam\",\"status\":\"active\",\"subject\":{\"reference\":\"Patient/$id\"},\"participant\":[{\"member\":{\"reference\":\"Practitioner/bench-doc\"}}]}"
    done <"$work/ids.txt"
    echo "bench-password-$RANDOM-$RANDOM" | $ward users add --data "$node" --username doc --role clinician --practitioner Practitioner/bench-doc --password-stdin >/dev/null
    $ward token --data "$node" --user doc --scope "user/*.rs" --minutes 60 >"$work/clinician"
}

declare -A reads searches
for r in $(seq "$rounds"); do
    for v in on off; do
        load "$v"
        read -r q qp qe < <(measure "/fhir/Patient/%s")
        read -r s sp se < <(measure "/fhir/Observation?patient=%s&_count=20")
        kill "$(cat "$work/pid")"; wait "$(cat "$work/pid")" 2>/dev/null || true
        [ "$qe" = 0 ] && [ "$se" = 0 ] || { echo "round $r policy $v: $qe + $se non-2xx responses"; exit 1; }
        reads[$v]+="$q "
        searches[$v]+="$s "
        echo "round $r policy $v: reads $q req/s (p99 $qp), searches $s req/s (p99 $sp)"
    done
done
for what in reads searches; do
    declare -n m=$what
    on=$(echo "${m[on]}" | median)
    off=$(echo "${m[off]}" | median)
    awk -v w="$what" -v on="$on" -v off="$off" 'BEGIN{printf "median %s: policy on %d, off %d, ratio %.3f\n", w, on, off, on/off}'
done
