#!/usr/bin/env bash
# The short commands as whole processes (ward token, users list, clients list, policy check, breakglass list) on a node
# holding the 100-patient Synthea set, timed by hyperfine: the installed build (publish profile linux-x64,
# ReadyToRun) of this tree against a plain publish of BASE (default: where this branch left main), in the same run,
# each side on its own copy of the same node. Prints hyperfine's table, then command, before, after and ratio (means).
# Usage: bench/fast-commands.sh [RUNS] [BASE]   (needs hyperfine, zstd, openssl)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
runs=${1:-10}
base=${2:-$(git merge-base HEAD main)}
make_work fast

echo "== publishing this tree (profile linux-x64) and $base (plain publish, as before the profile)"
dotnet publish src/Ward.Cli -p:PublishProfile=linux-x64 -p:PublishDir="$work/after/" -nologo -v q >/dev/null
git worktree add -q --detach "$work/base" "$base"
(cd "$work/base" && dotnet publish src/Ward.Cli -c Release -o "$work/before" -nologo -v q >/dev/null)

echo "== a node with the 100-patient set"
unpack_synthea "$work/synthea"
"$work/after/ward" init --data "$work/node" >/dev/null
"$work/after/ward" import --data "$work/node" "$work/synthea" >/dev/null
bench_token "$work/after/ward" "$work/node" >/dev/null
echo 'correct horse battery staple' | "$work/after/ward" users add --data "$work/node" -u bench-clinician --role clinician --password-stdin >/dev/null
cp -a "$work/node" "$work/node-before"
# The base build refuses the sections of ward.yaml it does not know (metrics:, logging: came with issue 30).
awk '/^[a-z-]+:/ { skip = ($1 == "metrics:" || $1 == "logging:") } !skip' "$work/node/ward.yaml" >"$work/node-before/ward.yaml"

echo "== machine: $(machine); load average $(cut -d' ' -f1-3 /proc/loadavg)"
commands=("token --client bench --scope system/*.rs" "users list" "clients list" "policy check" "breakglass list")
args=()
for c in "${commands[@]}"; do
    args+=(-n "before: $c" "$work/before/ward $c --data $work/node-before")
    args+=(-n "after: $c" "$work/after/ward $c --data $work/node")
done
hyperfine -N --warmup 1 --runs "$runs" --export-json "$work/times.json" "${args[@]}"
python3 - "$work/times.json" <<'PY'
import json, sys
rows = {r["command"]: r["mean"] for r in json.load(open(sys.argv[1]))["results"]}
print(f"{'command':<48} {'before':>8} {'after':>8} {'ratio':>6}")
for name, before in rows.items():
    if name.startswith("before: "):
        c = name[len("before: "):]
        after = rows["after: " + c]
        print(f"ward {c:<43} {before:7.2f}s {after:7.2f}s {before / after:5.1f}x")
PY
