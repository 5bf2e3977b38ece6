#!/usr/bin/env bash
# ward deid kanon on the Adult data set (30,162 records, 9 quasi-identifiers, k=5, 0 % suppression, Loss metric) as a
# whole process, timed by hyperfine; ARX 3.9.2 needs 5.5 s for the whole JVM process (0.35-0.74 s for its search).
# Usage: bench/kanon.sh [RUNS]   (needs hyperfine: apt-get install hyperfine)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
runs=${1:-10}
data=${WARD_SHARED_DATA:-../shared/data}/adult
make_work kanon
dotnet build -c Release -v q -nologo src/Ward.Cli >/dev/null
echo "== machine: $(machine)"
hyperfine --warmup 2 --runs "$runs" \
    "dotnet src/Ward.Cli/bin/Release/net10.0/ward.dll deid kanon --input $data/adult.csv --sep ';' --hierarchies $data \
     --qi sex,age,race,marital-status,education,native-country,workclass,occupation,salary-class --k 5 --suppression 0 --metric loss \
     --out $work/out.csv --report $work/report.json"
grep -E '"value"|"suppressed"' "$work/report.json"
