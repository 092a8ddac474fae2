#!/bin/sh
# Builds legate with profile-guided optimisation (PGO), then lays its code out again with BOLT:
# an instrumented build, a training load, the optimised build from the profile it wrote; then
# the same binary instrumented by BOLT, the training load again, and BOLT's layout from that
# profile. See bench/README.md, "Profile-guided build".
#   bench/pgo.sh                      # trains on bench.py's loads, plain and through
#                                     # configs/legate-features.yaml (~20 min on 2 cores)
#   PGO_TRAIN='my-load.sh' bench/pgo.sh   # trains on your own load instead
#   PGO_BOLT=0 bench/pgo.sh           # PGO only, no BOLT
# PGO_TRAIN runs with $LEGATE set to the instrumented binary; legate writes its profile when it
# exits (SIGTERM or SIGINT), so the command must stop it that way, not with SIGKILL.
# LEGATE_SRC, CARGO_TARGET_DIR: as in run.sh. The last line printed is the optimised binary,
# also copied to <target>/pgo/legate.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=${LEGATE_SRC:-$(dirname "$here")}
target=${CARGO_TARGET_DIR:-$src/target}
pgo=$target/pgo

# The profile is in LLVM's format of rustc's own LLVM: llvm-profdata must be that major version.
llvm=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
profdata=/usr/lib/llvm-$llvm/bin/llvm-profdata
if [ ! -x "$profdata" ]; then
    echo "installing llvm-$llvm (llvm-profdata for rustc's LLVM $llvm)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "llvm-$llvm"
fi

rm -rf "$pgo/raw"
mkdir -p "$pgo/raw"
(cd "$src" && RUSTFLAGS="-Cprofile-generate=$pgo/raw" CARGO_TARGET_DIR=$pgo/generate \
    cargo build --release --locked --bin legate)
# Build scripts were instrumented too and ran during the build: their profiles are not legate's.
rm -f "$pgo/raw"/*.profraw

# The training load, run against $LEGATE.
train() {
    if [ -n "${PGO_TRAIN:-}" ]; then
        sh -c "$PGO_TRAIN"
    else
        "$here/setup.sh"
        ulimit -n "$(ulimit -Hn)"
        python3 "$here/bench.py" --legate "$LEGATE" --src "$src" --proxies legate \
            --cases http1,close,h2c,1mib,idle,tcp,tls --reps 1 --duration 3 --idle-conns 1000 --out "$pgo/training"
        # The same loads through the features a deployment typically adds (access log, header
        # mutations, matchers, retries, filters), so that their code is not compiled as cold.
        python3 "$here/bench.py" --legate "$LEGATE" --src "$src" --proxies legate --legate-config legate-features.yaml \
            --cases http1,h2c,tls --reps 1 --duration 3 --out "$pgo/training"
    fi
}

LEGATE=$pgo/generate/release/legate
export LEGATE
train
if ! ls "$pgo/raw"/*.profraw >/dev/null 2>&1; then
    echo "pgo.sh: the training wrote no profile to $pgo/raw (was legate stopped with SIGKILL?)" >&2
    exit 1
fi
"$profdata" merge -o "$pgo/legate.profdata" "$pgo/raw"

# Cargo cannot tell that the profile changed (the flags did not): build every crate anew.
# Linked with its relocations kept, which BOLT needs to move functions (they are not loaded).
rm -rf "$pgo/use"
(cd "$src" && RUSTFLAGS="-Cprofile-use=$pgo/legate.profdata -Clink-arg=-Wl,--emit-relocs" CARGO_TARGET_DIR=$pgo/use \
    cargo build --release --locked --bin legate)
optimised=$pgo/use/release/legate

if [ "${PGO_BOLT:-1}" != 0 ]; then
    # BOLT (LLVM's post-link optimiser) is packaged apart from LLVM, and only some versions of
    # it: any will do, it reads the linked binary, not LLVM's bitcode.
    bolt_bin() { ls -d /usr/lib/llvm-*/bin/llvm-bolt 2>/dev/null | sort -V | tail -1 | xargs -r dirname; }
    if [ -z "$(bolt_bin)" ]; then
        apt-get update -q
        package=$(apt-cache pkgnames bolt- | grep -E '^bolt-[0-9]+$' | sort -V | tail -1)
        if [ -z "$package" ]; then
            echo "pgo.sh: no bolt-N package in this distribution; set PGO_BOLT=0" >&2
            exit 1
        fi
        echo "installing $package (llvm-bolt)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$package"
    fi
    bolt=$(bolt_bin)
    rm -rf "$pgo/bolt"
    mkdir -p "$pgo/bolt"
    # Instrumented by BOLT itself: counts on every branch of the final code, which sampling
    # cannot give in a VM without branch records. One profile per process.
    "$bolt/llvm-bolt" "$optimised" -o "$pgo/bolt/legate-instrumented" -instrument \
        -instrumentation-file="$pgo/bolt/profile" -instrumentation-file-append-pid
    LEGATE=$pgo/bolt/legate-instrumented
    train
    if ! ls "$pgo/bolt"/profile.*.fdata >/dev/null 2>&1; then
        echo "pgo.sh: the BOLT training wrote no profile to $pgo/bolt (was legate stopped with SIGKILL?)" >&2
        exit 1
    fi
    "$bolt/merge-fdata" "$pgo/bolt"/profile.*.fdata >"$pgo/bolt/legate.fdata"
    # Hot blocks in the order they run, hot functions beside their callers, cold blocks
    # (error paths, unwinding) moved out of the hot functions, identical functions folded.
    "$bolt/llvm-bolt" "$optimised" -o "$pgo/bolt/legate" -data="$pgo/bolt/legate.fdata" \
        -reorder-blocks=ext-tsp -reorder-functions=hfsort+ -split-functions -split-all-cold -split-eh \
        -icf=1 -use-gnu-stack -dyno-stats
    optimised=$pgo/bolt/legate
fi
cp "$optimised" "$pgo/legate"
echo "$optimised"
