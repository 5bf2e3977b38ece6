#!/usr/bin/env bash
# End-to-end benchmarks of a Ward node on this machine: ingest, reads (wrk), search latency.
# Usage: bench/run.sh [SECONDS_FOR_WRK]   (needs zstd and wrk: apt-get install zstd wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
seconds=${1:-30}
make_work bench
port=8190

build_tree
unpack_synthea "$work/synthea"
$ward init --data "$work/node" >/dev/null
WARD_TOKEN=$(bench_token "$ward" "$work/node")
export WARD_TOKEN
$ward serve --data "$work/node" --urls "http://127.0.0.1:$port" >"$work/serve.log" 2>&1 &
wait_ready "http://127.0.0.1:$port/health"

echo "== machine: $(machine)"
$bench ingest "http://127.0.0.1:$port/fhir" "$work/synthea" 4
$bench ids "http://127.0.0.1:$port/fhir" Patient "$work/ids.txt" >/dev/null
WARD_IDS="$work/ids.txt" wrk -t1 -c16 -d5s -s bench/reads.lua "http://127.0.0.1:$port" >/dev/null   # warm-up
echo "== reads: GET /fhir/Patient/{id}, random ids, wrk -t1 -c16 -d${seconds}s"
WARD_IDS="$work/ids.txt" wrk -t1 -c16 -d"${seconds}s" --latency -s bench/reads.lua "http://127.0.0.1:$port" | grep -E "Requests/sec|50%|99%|Latency "
$bench search "http://127.0.0.1:$port/fhir" 2000
