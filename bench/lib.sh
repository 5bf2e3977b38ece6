# Shared by the benchmark scripts (sourced, not run).

# One line naming the machine the figures were measured on.
machine() {
    echo "$(nproc) cores, $(grep 'model name' /proc/cpuinfo | head -1 | cut -d: -f2 | xargs), $(free -g | awk '/Mem/{print $2}') GiB"
}

# The median of the numbers on standard input (separated by spaces or lines).
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }

# An access token for the load generators: a user made for the run on the node, with every user/ scope, for 60 minutes.
# Usage: bench_token "<ward command>" NODE_DIR
bench_token() {
    echo "bench-password-$RANDOM-$RANDOM" | $1 users add --data "$2" --username bench --role admin --password-stdin >/dev/null
    $1 token --data "$2" --user bench --scope "user/*.cruds" --minutes 60
}

# Builds this tree (Release) and names its commands: $ward (the CLI) and $bench (the load generator).
build_tree() {
    dotnet build -c Release -v q -nologo Ward.slnx >/dev/null
    ward="dotnet src/Ward.Cli/bin/Release/net10.0/ward.dll"
    bench="dotnet bench/Ward.Bench/bin/Release/net10.0/Ward.Bench.dll"
}

# Unpacks the 100-patient Synthea set (shared test data) into the folder $1.
unpack_synthea() {
    mkdir -p "$1"
    tar --zstd -xf "${WARD_SHARED_DATA:-../shared/data}/synthea/synthea-r4-small-blaze100.tar.zst" -C "$1"
}
