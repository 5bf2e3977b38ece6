#!/usr/bin/env bash
# The same node on its two engines, measured in the same run, alternating round after round: ingest of the Synthea
# 100-patient set (4 clients), GET Patient/{id} with wrk, and Observation?patient=X&code=Y search latency.
# Usage: bench/engines.sh [READ_SECONDS] [ROUNDS]   (needs zstd, wrk and a PostgreSQL server)
# PostgreSQL: PGHOST (default 127.0.0.1), PGPORT (5432), PGUSER (ward) and PGPASSWORD name a role that may create
# databases; each round gets a database of its own, dropped afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
seconds=${1:-20}
rounds=${2:-3}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-ward}
make_work engines
port=8192

build_tree
unpack_synthea "$work/synthea"
echo "== machine: $(machine); $(psql -d postgres -tAc 'SELECT version()' | cut -d, -f1)"

run() { # engine round
    local node="$work/node-$1-$2" db="ward_bench_$$_$2"
    if [ "$1" = postgres ]; then
        psql -q -d postgres -c "CREATE DATABASE $db"
        $ward init --data "$node" --database "Host=$PGHOST;Port=$PGPORT;Username=$PGUSER;Database=$db" >/dev/null
    else
        $ward init --data "$node" >/dev/null
    fi
    WARD_TOKEN=$(bench_token "$ward" "$node")
    export WARD_TOKEN
    $ward serve --data "$node" --urls "http://127.0.0.1:$port" >"$work/serve.log" 2>&1 &
    local pid=$!
    wait_ready "http://127.0.0.1:$port/health"
    local ingest reads search
    ingest=$($bench ingest "http://127.0.0.1:$port/fhir" "$work/synthea" 4 | sed -E 's/.*= ([0-9]+) resources.*/\1/')
    $bench ids "http://127.0.0.1:$port/fhir" Patient "$work/ids.txt" >/dev/null
    WARD_IDS="$work/ids.txt" wrk -t1 -c16 -d5s -s bench/reads.lua "http://127.0.0.1:$port" >/dev/null
    reads=$(WARD_IDS="$work/ids.txt" wrk -t1 -c16 -d"${seconds}s" --latency -s bench/reads.lua "http://127.0.0.1:$port" \
        | awk '/Requests\/sec/{r=$2} / 99%/{p=$2} END{printf "%d %s", r, p}')
    search=$($bench search "http://127.0.0.1:$port/fhir" 2000 | sed -E 's/.*median ([0-9.]+) ms, p99 ([0-9.]+) ms.*/\1 \2/')
    kill $pid; wait $pid 2>/dev/null || true
    rm -rf "$node"
    if [ "$1" = postgres ]; then psql -q -d postgres -c "DROP DATABASE $db WITH (FORCE)"; fi
    echo "$ingest $reads $search"
}

declare -A ingest reads search
for r in $(seq "$rounds"); do
    for e in sqlite postgres; do
        read -r i q p99 sm sp < <(run "$e" "$r")
        ingest[$e]+="$i "
        reads[$e]+="$q "
        search[$e]+="$sm "
        echo "round $r $e: ingest $i resources/s, reads $q req/s (p99 $p99), search median $sm ms (p99 $sp ms)"
    done
done
for e in sqlite postgres; do
    echo "$e: median ingest $(echo "${ingest[$e]}" | median) resources/s, reads $(echo "${reads[$e]}" | median) req/s, search $(echo "${search[$e]}" | median) ms"
done
awk -v ip="$(echo "${ingest[postgres]}" | median)" -v is="$(echo "${ingest[sqlite]}" | median)" \
    -v rp="$(echo "${reads[postgres]}" | median)" -v rs="$(echo "${reads[sqlite]}" | median)" \
    -v sp="$(echo "${search[postgres]}" | median)" -v ss="$(echo "${search[sqlite]}" | median)" \
    'BEGIN{printf "ratio postgres/sqlite: ingest %.3f, reads %.3f, search median latency %.3f\n", ip/is, rp/rs, sp/ss}'
