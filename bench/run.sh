#!/bin/sh
# The side-by-side benchmark in one command; see bench/README.md.
#   bench/run.sh [--quick] [--pingora] [--pgo] [bench.py options...]
#   bench/run.sh --failover [failover.py options...]
#   bench/run.sh --xds-scale [xds_scale.py options...]
# LEGATE_SRC: the checkout to build (default: this repository);
# CARGO_TARGET_DIR: where cargo builds it (default: $LEGATE_SRC/target).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=${LEGATE_SRC:-$(dirname "$here")}
target=${CARGO_TARGET_DIR:-$src/target}
failover=0
xds_scale=0
pingora=0
pgo=0
args=""
for arg in "$@"; do
    case $arg in
        --failover) failover=1 ;;
        --xds-scale) xds_scale=1 ;;
        --pingora) pingora=1 ;;
        --pgo) pgo=1 ;;
        *) args="$args $arg" ;;
    esac
done
"$here/setup.sh"
(cd "$src" && CARGO_TARGET_DIR=$target cargo build --release --bin legate)
ulimit -n "$(ulimit -Hn)"
if [ $failover = 1 ]; then
    # shellcheck disable=SC2086
    exec python3 "$here/failover.py" --legate "$target/release/legate" --src "$src" $args
fi
if [ $xds_scale = 1 ]; then
    # shellcheck disable=SC2086
    exec python3 "$here/xds_scale.py" --legate "$target/release/legate" --src "$src" $args
fi
if [ $pingora = 1 ]; then
    # Pingora's zlib-ng build script needs cmake.
    command -v cmake >/dev/null 2>&1 || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q cmake; }
    (cd "$here/peers/pingora" && CARGO_TARGET_DIR=$target/pingora cargo build --release)
    args="$args --pingora $target/pingora/release/pingora-bench"
fi
if [ $pgo = 1 ]; then
    LEGATE_SRC=$src CARGO_TARGET_DIR=$target "$here/pgo.sh"
    args="$args --legate-pgo $target/pgo/legate"
fi
# shellcheck disable=SC2086
exec python3 "$here/bench.py" --legate "$target/release/legate" --src "$src" $args
