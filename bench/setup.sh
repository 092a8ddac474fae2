#!/bin/sh
# Installs the peers and load generators from Debian (as root). The packages' own services are
# not started here (and bench.py never uses them: it starts nginx and HAProxy with its own configs).
set -eu
need=""
for tool in nginx:nginx haproxy:haproxy wrk:wrk h2load:nghttp2-client iperf3:iperf3 taskset:util-linux openssl:openssl \
            strace:strace perf:linux-perf valgrind:valgrind; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need="$need ${tool#*:}"
done
[ -f /usr/lib/nginx/modules/ngx_stream_module.so ] || need="$need libnginx-mod-stream"
if [ -n "$need" ]; then
    echo "installing:$need"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q $need
fi
