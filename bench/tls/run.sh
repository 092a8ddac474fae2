#!/usr/bin/env bash
# TLS benchmark: legate beside nginx and HAProxy with the same certificate, one core each
# (issue 5, "Performance"). Reports handshakes per second (wrk, `connection: close`: one full
# handshake per request; session resumption is off in all three servers, so none is resumed) and bulk throughput over kept-alive TLS connections (1 MiB responses
# proxied from a plaintext nginx upstream), for ECDSA P-256 and RSA 2048, as ratios to nginx.
#
# Needs: a release build of legate (cargo build --release -p legate), nginx, haproxy, wrk,
# openssl, taskset. Servers run on core 0, the client and the upstream on core 1 (2+ cores).
# Usage: bench/tls/run.sh [path/to/legate] [seconds]
set -euo pipefail

LEGATE=${1:-${CARGO_TARGET_DIR:-target}/release/legate}
SECONDS_PER_RUN=${2:-10}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

UPSTREAM_PORT=18080
LEGATE_PORT=18443
NGINX_PORT=18444
HAPROXY_PORT=18445

# The upstream: nginx serving a 1 MiB file in cleartext.
mkdir -p "$WORK/www"
head -c 1048576 /dev/urandom > "$WORK/www/1m"
echo ok > "$WORK/www/small"
# nginx workers run as an unprivileged user.
chmod 755 "$WORK" "$WORK/www"
chmod 644 "$WORK/www/1m" "$WORK/www/small"
cat > "$WORK/upstream.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/upstream.pid; error_log $WORK/upstream.err;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:$UPSTREAM_PORT; root $WORK/www; keepalive_requests 100000; } }
CONF
taskset -c 1 nginx -c "$WORK/upstream.conf" -p "$WORK" &
PIDS+=($!)
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$UPSTREAM_PORT/small" && break; sleep 0.2; done

certs() {
  local kind=$1
  case $kind in
    ecdsa) openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
             -subj /CN=bench.local -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null ;;
    rsa) openssl req -x509 -newkey rsa:2048 -nodes -days 30 \
           -subj /CN=bench.local -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null ;;
  esac
  cat "$WORK/cert.pem" "$WORK/key.pem" > "$WORK/combined.pem"
}

start_servers() {
  cat > "$WORK/legate.yaml" <<CONF
admin: { address: { socket_address: { address: 127.0.0.1, port_value: 19901 } } }
static_resources:
  listeners:
  - name: tls
    address: { socket_address: { address: 127.0.0.1, port_value: $LEGATE_PORT } }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: { filename: $WORK/cert.pem }
              private_key: { filename: $WORK/key.pem }
          disable_stateless_session_resumption: true
          disable_stateful_session_resumption: true
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{ match: { prefix: "/" }, route: { cluster: upstream } }]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: upstream
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $UPSTREAM_PORT } } } }] }]
CONF
  taskset -c 0 "$LEGATE" -c "$WORK/legate.yaml" --concurrency 1 -l error &
  SERVERS=($!)
  cat > "$WORK/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/nginx.pid; error_log $WORK/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  upstream up { server 127.0.0.1:$UPSTREAM_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT ssl;
    ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem;
    ssl_session_tickets off; ssl_session_cache off;
    keepalive_requests 100000;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
  }
}
CONF
  taskset -c 0 nginx -c "$WORK/nginx.conf" -p "$WORK" &
  SERVERS+=($!)
  cat > "$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
  tune.ssl.cachesize 0
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
frontend tls
  bind 127.0.0.1:$HAPROXY_PORT ssl crt $WORK/combined.pem no-tls-tickets
  default_backend up
backend up
  http-reuse always
  server up 127.0.0.1:$UPSTREAM_PORT
CONF
  taskset -c 0 haproxy -f "$WORK/haproxy.cfg" -q &
  SERVERS+=($!)
  PIDS+=("${SERVERS[@]}")
  for port in $NGINX_PORT $HAPROXY_PORT $LEGATE_PORT; do
    for _ in $(seq 50); do
      [ "$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$port/small")" = 200 ] && break
      sleep 0.2
    done
    [ "$(curl -sk -o /dev/null -w '%{size_download}' "https://127.0.0.1:$port/1m")" = 1048576 ] \
      || { echo "server on port $port does not serve /1m" >&2; exit 1; }
  done
}

stop_servers() {
  for pid in "${SERVERS[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 1
}

rate() { # wrk's Requests/sec for: port, path, extra wrk arguments... ("!" if any failed)
  local port=$1 path=$2; shift 2
  taskset -c 1 wrk -t1 -d"${SECONDS_PER_RUN}s" "$@" "https://127.0.0.1:$port$path" \
    | awk '/Requests\/sec/ {rate=$2} /Non-2xx|Socket errors/ {bad="!"} END {print rate bad}'
}

for kind in ecdsa rsa; do
  certs "$kind"
  start_servers
  for name in nginx:$NGINX_PORT haproxy:$HAPROXY_PORT legate:$LEGATE_PORT; do
    port=${name#*:}
    hs=$(rate "$port" /small -c16 -H "Connection: close")
    bulk=$(rate "$port" /1m -c4)
    printf '%-6s %-8s handshakes/s %10s   1MiB responses/s %8s\n' "$kind" "${name%%:*}" "$hs" "$bulk"
  done
  stop_servers
done
