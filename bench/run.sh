#!/bin/sh
# The side-by-side benchmark in one command; see bench/README.md.
#   bench/run.sh [--quick] [--failover] [--pingora] [bench.py options...]
# LEGATE_SRC: the checkout to build (default: this repository);
# CARGO_TARGET_DIR: where cargo builds it (default: $LEGATE_SRC/target).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=${LEGATE_SRC:-$(dirname "$here")}
target=${CARGO_TARGET_DIR:-$src/target}
failover=0
pingora=0
for arg in "$@"; do
    case $arg in
        --failover) failover=1 ;;
        --pingora) pingora=1 ;;
    esac
done
"$here/setup.sh"
(cd "$src" && CARGO_TARGET_DIR=$target cargo build --release --bin legate)
ulimit -n "$(ulimit -Hn)"
if [ $failover = 1 ]; then
    exec python3 "$here/failover.py" --legate "$target/release/legate" --src "$src"
fi
extra=""
if [ $pingora = 1 ]; then
    (cd "$here/peers/pingora" && CARGO_TARGET_DIR=$target/pingora cargo build --release)
    extra="--pingora $target/pingora/release/pingora-bench"
fi
args=""
for arg in "$@"; do
    case $arg in --failover|--pingora) ;; *) args="$args $arg" ;; esac
done
# shellcheck disable=SC2086
exec python3 "$here/bench.py" --legate "$target/release/legate" --src "$src" $extra $args
