#!/usr/bin/env bash
# Research export throughput on the 100-patient Synthea set (52,635 resources): `ward research export` (all seven
# tables as Parquet, CSV and FHIR NDJSON, 5-anonymity over age, gender and department, report and dictionary) against
# `ward export` (the plain NDJSON of every current resource: read, decrypt, write: the anchor) on the same node, as
# whole processes timed by hyperfine in the same run. Then one differentially private histogram by the CLI.
# Usage: bench/research.sh [RUNS]   (needs zstd, hyperfine)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
runs=${1:-5}
make_work research
port=8197

build_tree
unpack_synthea "$work/synthea"
echo "== machine: $(machine)"
node="$work/node"
$ward init --data "$node" >/dev/null
token=$(bench_token "$ward" "$node")
$ward serve --data "$node" --urls "http://127.0.0.1:$port" >"$work/serve.log" 2>&1 &
pid=$!
wait_ready "http://127.0.0.1:$port/health"
WARD_TOKEN="$token" $bench ingest "http://127.0.0.1:$port/fhir" "$work/synthea" 4 >/dev/null
kill $pid; wait $pid 2>/dev/null || true

cat >"$work/project.yaml" <<YAML
project: bench
formats: [parquet, csv, ndjson]
quasi-identifiers: [age, gender, department]
privacy: { k: 5, suppression: 0.05 }
YAML
hyperfine --warmup 1 --runs "$runs" --export-json "$work/times.json" \
    -n "research export" "$ward research export --data $node --config $work/project.yaml --out $work/research" \
    -n "plain export" "$ward export --data $node --out $work/plain"
rows=$(python3 -c "import json; print(sum(json.load(open('$work/research/risk-report.json'))['rows'].values()))")
python3 - "$work/times.json" "$rows" <<'PY'
import json, sys
t = {r["command"]: r["median"] for r in json.load(open(sys.argv[1]))["results"]}
rows = int(sys.argv[2])
print(f"research export: {t['research export']:.2f} s median, {rows} rows, {rows / t['research export']:,.0f} rows/s")
print(f"plain export: {t['plain export']:.2f} s median; research / plain time ratio {t['research export'] / t['plain export']:.2f}")
PY
echo "bench-password-$RANDOM-$RANDOM" | $ward users add --data "$node" --username analyst --role researcher --password-stdin >/dev/null
$ward research budget --data "$node" --researcher analyst --epsilon 1 >/dev/null
/usr/bin/time -f "differentially private histogram (Condition by age band, 2 codes): %e s" \
    $ward research query --data "$node" --researcher analyst --count Condition --by age-band,code --codes 44054006,59621000 --epsilon 0.5 >/dev/null
