#!/usr/bin/env bash
# Cost of encryption at rest: ingest and read throughput of this tree against the last build without encryption
# (commit e6e3a0d, the foundation), measured in the same run, alternating the two builds round after round.
# Usage: bench/encryption.sh [READ_SECONDS] [ROUNDS]   (needs zstd and wrk: apt-get install zstd wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
seconds=${1:-20}
rounds=${2:-3}
baseline_commit=e6e3a0d
work=$(mktemp -d /tmp/ward-enc-bench.XXXXXX)
port=8191
cleanup() {
    kill $(jobs -p) 2>/dev/null || true
    git worktree remove --force "$work/baseline" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

dotnet build -c Release -v q -nologo Ward.slnx >/dev/null
git worktree add --detach "$work/baseline" "$baseline_commit" >/dev/null 2>&1
dotnet build -c Release -v q -nologo "$work/baseline/src/Ward.Cli" >/dev/null
bench="dotnet bench/Ward.Bench/bin/Release/net10.0/Ward.Bench.dll"
declare -A ward=(
    [plain]="dotnet $work/baseline/src/Ward.Cli/bin/Release/net10.0/ward.dll"
    [encrypted]="dotnet src/Ward.Cli/bin/Release/net10.0/ward.dll"
)

unpack_synthea "$work/synthea"
echo "== machine: $(machine)"
$bench crypto 2

${ward[encrypted]} init --data "$work/token-node" >/dev/null
filler=$(bench_token "${ward[encrypted]}" "$work/token-node")

run() { # variant round
    local node="$work/node-$1-$2"
    ${ward[$1]} init --data "$node" >/dev/null
    # The plaintext baseline predates tokens and ignores the header; it gets one of the same size, so that both variants
    # carry the same bytes.
    if [ "$1" = encrypted ]; then WARD_TOKEN=$(bench_token "${ward[encrypted]}" "$node"); else WARD_TOKEN=$filler; fi
    export WARD_TOKEN
    ${ward[$1]} serve --data "$node" --urls "http://127.0.0.1:$port" >"$work/serve.log" 2>&1 &
    local pid=$!
    wait_ready "http://127.0.0.1:$port/health"
    local ingest reads
    ingest=$($bench ingest "http://127.0.0.1:$port/fhir" "$work/synthea" 4 | sed -E 's/.*= ([0-9]+) resources.*/\1/')
    $bench ids "http://127.0.0.1:$port/fhir" Patient "$work/ids.txt" >/dev/null
    WARD_IDS="$work/ids.txt" wrk -t1 -c16 -d5s -s bench/reads.lua "http://127.0.0.1:$port" >/dev/null
    reads=$(WARD_IDS="$work/ids.txt" wrk -t1 -c16 -d"${seconds}s" -s bench/reads.lua "http://127.0.0.1:$port" | awk '/Requests\/sec/{printf "%d", $2}')
    kill $pid; wait $pid 2>/dev/null || true
    rm -rf "$node"
    echo "$ingest $reads"
}

declare -A ingest reads
for r in $(seq "$rounds"); do
    for v in plain encrypted; do
        read -r i q < <(run "$v" "$r")
        ingest[$v]+="$i "
        reads[$v]+="$q "
        echo "round $r $v: ingest $i resources/s, reads $q req/s"
    done
done
for v in plain encrypted; do
    echo "$v: median ingest $(echo "${ingest[$v]}" | median) resources/s, median reads $(echo "${reads[$v]}" | median) req/s"
done
awk -v ie="$(echo "${ingest[encrypted]}" | median)" -v ip="$(echo "${ingest[plain]}" | median)" \
    -v re="$(echo "${reads[encrypted]}" | median)" -v rp="$(echo "${reads[plain]}" | median)" \
    'BEGIN{printf "ratio encrypted/plain: ingest %.3f, reads %.3f\n", ie/ip, re/rp}'
