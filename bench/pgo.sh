#!/bin/sh
# Builds legate with profile-guided optimisation (PGO): an instrumented build, a training load,
# then the optimised build from the profile it wrote. See bench/README.md, "Profile-guided build".
#   bench/pgo.sh                      # trains on bench.py's loads, plain and through
#                                     # configs/legate-features.yaml (~15 min on 2 cores)
#   PGO_TRAIN='my-load.sh' bench/pgo.sh   # trains on your own load instead
# PGO_TRAIN runs with $LEGATE set to the instrumented binary; legate writes its profile when it
# exits (SIGTERM or SIGINT), so the command must stop it that way, not with SIGKILL.
# LEGATE_SRC, CARGO_TARGET_DIR: as in run.sh. The last line printed is the optimised binary.
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

LEGATE=$pgo/generate/release/legate
export LEGATE
if [ -n "${PGO_TRAIN:-}" ]; then
    sh -c "$PGO_TRAIN"
else
    "$here/setup.sh"
    ulimit -n "$(ulimit -Hn)"
    python3 "$here/bench.py" --legate "$LEGATE" --src "$src" --proxies legate \
        --cases http1,h2c,1mib,tcp,tls --reps 1 --duration 3 --out "$pgo/training"
    # The same loads through the features a deployment typically adds (access log, header
    # mutations, matchers, retries, filters), so that their code is not compiled as cold.
    python3 "$here/bench.py" --legate "$LEGATE" --src "$src" --proxies legate --legate-config legate-features.yaml \
        --cases http1,h2c,tls --reps 1 --duration 3 --out "$pgo/training"
fi
if ! ls "$pgo/raw"/*.profraw >/dev/null 2>&1; then
    echo "pgo.sh: the training wrote no profile to $pgo/raw (was legate stopped with SIGKILL?)" >&2
    exit 1
fi
"$profdata" merge -o "$pgo/legate.profdata" "$pgo/raw"

# Cargo cannot tell that the profile changed (the flags did not): build every crate anew.
rm -rf "$pgo/use"
(cd "$src" && RUSTFLAGS="-Cprofile-use=$pgo/legate.profdata" CARGO_TARGET_DIR=$pgo/use \
    cargo build --release --locked --bin legate)
echo "$pgo/use/release/legate"
