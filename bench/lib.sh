# Shared by the benchmark scripts (sourced, not run).

# One line naming the machine the figures were measured on.
machine() {
    echo "$(nproc) cores, $(grep 'model name' /proc/cpuinfo | head -1 | cut -d: -f2 | xargs), $(free -g | awk '/Mem/{print $2}') GiB"
}

# A scratch folder for the run, named $work (/tmp/ward-NAME.*), removed at exit with the servers the script started in
# the background and the base tree's worktree (build_base "$work/base"), however the script ends.
# Usage: make_work NAME
make_work() {
    work=$(mktemp -d "/tmp/ward-$1.XXXXXX")
    trap 'kill $(jobs -p) 2>/dev/null || true; git worktree remove --force "$work/base" 2>/dev/null || true; rm -rf "$work"' EXIT
}

# The median of the numbers on standard input (separated by spaces or lines).
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }

# An access token for the load generators: the node's backend integration (role service, as an interface engine that
# feeds and reads records), registered for the run with a fresh P-384 key, with every system/ scope, for 60 minutes.
# Usage: bench_token "<ward command>" NODE_DIR
bench_token() {
    local key x y
    key=$(mktemp)
    openssl ecparam -name secp384r1 -genkey -noout -out "$key" 2>/dev/null
    x=$(openssl ec -in "$key" -pubout -outform DER 2>/dev/null | tail -c 96 | head -c 48 | basenc --base64url | tr -d '=\n')
    y=$(openssl ec -in "$key" -pubout -outform DER 2>/dev/null | tail -c 48 | basenc --base64url | tr -d '=\n')
    rm -f "$key"
    printf '{"keys":[{"kty":"EC","crv":"P-384","kid":"bench","use":"sig","alg":"ES384","x":"%s","y":"%s"}]}' "$x" "$y" >"$2/bench-jwks.json"
    $1 clients add --data "$2" --client-id bench --kind backend --scopes "system/*.cruds" --jwks "$2/bench-jwks.json" >/dev/null
    $1 token --data "$2" --client bench --scope "system/*.cruds" --minutes 60
}

# Builds this tree (Release) and names its commands: $ward (the CLI) and $bench (the load generator).
build_tree() {
    dotnet build -c Release -v q -nologo Ward.slnx >/dev/null
    ward="dotnet src/Ward.Cli/bin/Release/net10.0/ward.dll"
    bench="dotnet bench/Ward.Bench/bin/Release/net10.0/Ward.Bench.dll"
}

# Builds commit $2 in a git worktree at $1 (the "before" side of a same-run comparison; at "$work/base", make_work
# removes it at exit) and names its commands: $base_ward and $base_bench.
build_base() {
    git worktree add -q --detach "$1" "$2"
    (cd "$1" && dotnet build -c Release -v q -nologo Ward.slnx >/dev/null)
    base_ward="dotnet $1/src/Ward.Cli/bin/Release/net10.0/ward.dll"
    base_bench="dotnet $1/bench/Ward.Bench/bin/Release/net10.0/Ward.Bench.dll"
}

# Waits (up to 20 s) until every URL given answers with a success status.
wait_ready() {
    local url ready
    for _ in $(seq 100); do
        ready=1
        for url in "$@"; do curl -sf "$url" >/dev/null || { ready=0; break; }; done
        [ "$ready" = 1 ] && return 0
        sleep 0.2
    done
    echo "not ready after 20 s: $*" >&2
    return 1
}

# Unpacks the 100-patient Synthea set (shared test data) into the folder $1.
unpack_synthea() {
    mkdir -p "$1"
    tar --zstd -xf "${WARD_SHARED_DATA:-../shared/data}/synthea/synthea-r4-small-blaze100.tar.zst" -C "$1"
}

# A clinician's load on the node at 127.0.0.1:$port for $seconds seconds after a 3 s warm-up: `wrk -t1 -c16` over PATH
# (its %s replaced by ids from $work/ids.txt) with the token in $work/clinician. Prints requests/s, p99, non-2xx answers.
# Usage: measure PATH
measure() { # PATH: requests/s, p99, non-2xx
    WARD_TOKEN="$(cat "$work/clinician")" WARD_IDS="$work/ids.txt" WARD_PATH="$1" wrk -t1 -c16 -d3s -s bench/reads.lua "http://127.0.0.1:$port" >/dev/null
    WARD_TOKEN="$(cat "$work/clinician")" WARD_IDS="$work/ids.txt" WARD_PATH="$1" wrk -t1 -c16 -d"${seconds}s" --latency -s bench/reads.lua "http://127.0.0.1:$port" \
        | awk '/Requests\/sec/{r=$2} / 99%/{p=$2} /Non-2xx/{e=$NF} END{printf "%d %s %s\n", r, p, e+0}'
}
