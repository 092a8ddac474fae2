//! Replies legate makes itself (404 no route, 503 no healthy upstream, 504 timeout…), with
//! Envoy's bodies, response flags and `%RESPONSE_CODE_DETAILS%`.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};

use super::response_flags::ResponseFlag;

#[derive(Debug)]
pub struct LocalReply {
    pub status: StatusCode,
    pub body: Bytes,
    /// `%RESPONSE_CODE_DETAILS%`, e.g. `route_not_found`.
    pub details: String,
    pub flag: Option<ResponseFlag>,
    /// Extra headers (`x-envoy-overloaded`, `location`, `www-authenticate`…).
    pub headers: HeaderMap,
    /// Whether the body is plain text (`content-type: text/plain`); a direct response with
    /// its own body may set its own type through headers.
    pub text: bool,
    /// The reply opens a tunnel (CONNECT `200`): no body, no framing headers.
    pub tunnel: bool,
    /// Not a reply: the HTTP/2 stream is reset instead, as Envoy's HTTP/2 codec does with a
    /// request it refuses while reading its headers.
    pub reset_stream: bool,
}

impl LocalReply {
    pub fn new(status: StatusCode, body: impl Into<Bytes>, details: impl Into<String>) -> Self {
        LocalReply {
            status,
            body: body.into(),
            details: details.into(),
            flag: None,
            headers: HeaderMap::new(),
            text: true,
            tunnel: false,
            reset_stream: false,
        }
    }

    pub fn with_flag(mut self, flag: ResponseFlag) -> Self {
        self.flag = Some(flag);
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// 404, `NR`: no route matched.
    pub fn no_route() -> Self {
        LocalReply::new(StatusCode::NOT_FOUND, Bytes::new(), "route_not_found").with_flag(ResponseFlag::NoRouteFound)
    }

    /// 503, `UH`: the cluster has no host to pick.
    pub fn no_healthy_upstream() -> Self {
        LocalReply::new(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream", "no_healthy_upstream")
            .with_flag(ResponseFlag::NoHealthyUpstream)
    }

    /// `NC`: the route names a cluster that does not exist.
    pub fn cluster_not_found(status: StatusCode) -> Self {
        LocalReply::new(status, Bytes::new(), "cluster_not_found").with_flag(ResponseFlag::NoClusterFound)
    }

    /// 504, `UT`: the route `timeout` or a `per_try_timeout` passed.
    /// `alt`: the request carried `x-envoy-upstream-rq-timeout-alt-response`, and the reply is
    /// a bodiless 204 instead (Envoy's router).
    pub fn upstream_timeout(alt: bool) -> Self {
        let (status, body) = match alt {
            false => (StatusCode::GATEWAY_TIMEOUT, "upstream request timeout"),
            true => (StatusCode::NO_CONTENT, ""),
        };
        LocalReply::new(status, body, "upstream_response_timeout").with_flag(ResponseFlag::UpstreamRequestTimeout)
    }

    /// 503 (502 for `UPE`) with Envoy's "upstream connect error or disconnect/reset before headers"
    /// body.
    pub fn upstream_reset(flag: ResponseFlag, reason: &str, retried: bool, details: &str) -> Self {
        let body = if retried {
            format!("upstream connect error or disconnect/reset before headers. retried and the latest reset reason: {reason}")
        } else {
            format!("upstream connect error or disconnect/reset before headers. reset reason: {reason}")
        };
        // An upstream that broke the protocol is a bad gateway (`UPE`); any other reset 503.
        let status = match flag {
            ResponseFlag::UpstreamProtocolError => StatusCode::BAD_GATEWAY,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut reply = LocalReply::new(status, body, details).with_flag(flag);
        if flag == ResponseFlag::UpstreamOverflow {
            reply.headers.insert(HeaderName::from_static("x-envoy-overloaded"), HeaderValue::from_static("true"));
        }
        reply
    }
}
