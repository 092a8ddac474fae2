//! The smallest Pingora reverse proxy equivalent to bench/configs/*: one listener
//! (127.0.0.1:21080) proxying every request over HTTP/1.1 to the shared backend
//! (127.0.0.1:20080) through Pingora's upstream connection pool; no logging. The number of
//! threads comes from the Pingora config file given with `-c` (bench/peers/pingora/conf.yaml:
//! `threads: 1`). h2c is accepted on a second listener (127.0.0.1:21081).

use async_trait::async_trait;
use pingora_core::apps::HttpServerOptions;
use pingora_core::server::configuration::Opt;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_proxy::{ProxyHttp, Session};

const BACKEND: (&str, u16) = ("127.0.0.1", 20080);

/// Every request goes to the one backend.
pub struct Backend;

#[async_trait]
impl ProxyHttp for Backend {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Self::CTX) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(BACKEND, false, String::new())))
    }
}

fn main() {
    let mut server = Server::new(Some(Opt::parse_args())).expect("pingora server");
    server.bootstrap();

    let mut http = pingora_proxy::http_proxy_service(&server.configuration, Backend);
    http.add_tcp("127.0.0.1:21080");
    server.add_service(http);

    let mut h2c = pingora_proxy::http_proxy_service(&server.configuration, Backend);
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    h2c.app_logic_mut().expect("proxy app").server_options = Some(options);
    h2c.add_tcp("127.0.0.1:21081");
    server.add_service(h2c);

    server.run_forever();
}
