//! The embedded demo config, run when legate starts with no config: a listener on
//! 127.0.0.1:10000 proxies each connection through a real cluster to a second listener on
//! 127.0.0.1:10001, which answers with a fixed HTTP/1.1 response and closes. So
//! `curl http://127.0.0.1:10000/` shows the whole path: listener, filter chain, tcp_proxy,
//! cluster, load balancer, upstream connection. Admin on 127.0.0.1:9901.

pub const DEMO_YAML: &str = r#"
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: 9901 }
static_resources:
  listeners:
  - name: demo_ingress
    address:
      socket_address: { address: 127.0.0.1, port_value: 10000 }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: demo_ingress
          cluster: demo_backend
  - name: demo_backend
    address:
      socket_address: { address: 127.0.0.1, port_value: 10001 }
    filter_chains:
    - filters:
      - name: envoy.filters.network.direct_response
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.direct_response.v3.Config
          response:
            inline_string: "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 18\r\nconnection: close\r\nserver: legate\r\n\r\nHello from legate\n"
  clusters:
  - name: demo_backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: demo_backend
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: 10001 }
"#;
