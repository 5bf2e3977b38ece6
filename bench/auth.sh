#!/usr/bin/env bash
# What token checks cost on reads: the same node, the same server host (Ward.Bench serve, server GC as 'ward serve'),
# GET /fhir/Patient/{id} with wrk, with access tokens required (each request carries one) and with token checks off,
# alternating round after round; prints both medians and their ratio (target: at least 0.90). A third variant, checks
# off and no Authorization header at all, shows what carrying a ~900-byte token costs the client and Kestrel.
# Usage: bench/auth.sh [READ_SECONDS] [ROUNDS]   (needs zstd and wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
seconds=${1:-20}
rounds=${2:-3}
make_work auth
port=8193

build_tree
unpack_synthea "$work/synthea"
echo "== machine: $(machine)"
$ward init --data "$work/node" >/dev/null
$ward import --data "$work/node" "$work/synthea" >/dev/null
token=$(bench_token "$ward" "$work/node")

run() { # on|off|bare
    local flag="" header="$token"
    [ "$1" != on ] && flag="--no-auth"
    [ "$1" = bare ] && header=""
    DOTNET_gcServer=1 DOTNET_gcConcurrent=1 $bench serve "$work/node" "http://127.0.0.1:$port" $flag >"$work/serve.log" 2>&1 &
    local pid=$!
    wait_ready "http://127.0.0.1:$port/health"
    WARD_TOKEN="$token" $bench ids "http://127.0.0.1:$port/fhir" Patient "$work/ids.txt" >/dev/null
    WARD_TOKEN="$header" WARD_IDS="$work/ids.txt" wrk -t1 -c16 -d5s -s bench/reads.lua "http://127.0.0.1:$port" >/dev/null
    WARD_TOKEN="$header" WARD_IDS="$work/ids.txt" wrk -t1 -c16 -d"${seconds}s" --latency -s bench/reads.lua "http://127.0.0.1:$port" \
        | awk '/Requests\/sec/{r=$2} / 99%/{p=$2} /Non-2xx/{e=$NF} END{printf "%d %s %s\n", r, p, e+0}'
    kill $pid; wait $pid 2>/dev/null || true
}

declare -A reads
for r in $(seq "$rounds"); do
    for v in on off bare; do
        read -r q p99 errors < <(run "$v")
        [ "$errors" = 0 ] || { echo "round $r $v: $errors non-2xx responses"; exit 1; }
        reads[$v]+="$q "
        echo "round $r tokens $v: reads $q req/s (p99 $p99)"
    done
done
on=$(echo "${reads[on]}" | median)
off=$(echo "${reads[off]}" | median)
echo "median reads: tokens required $on req/s, token checks off $off req/s, checks off without the header $(echo "${reads[bare]}" | median) req/s"
awk -v on="$on" -v off="$off" 'BEGIN{printf "ratio on/off: %.3f\n", on/off}'
