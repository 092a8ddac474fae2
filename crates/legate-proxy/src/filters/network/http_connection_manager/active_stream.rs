//! One request/response exchange on a downstream connection (Envoy's `ActiveStream`):
//! request header checks and the headers the connection manager owns (`x-forwarded-for`,
//! `x-request-id`, `via`…), route selection, the HTTP filters, the router, and the response
//! on its way back.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, SERVER, VIA};
use http::{Method, Request, Response, StatusCode, Version};
use legate_config::filters::network::http_connection_manager::{
    HttpConnectionManager as HcmConfig, PathWithEscapedSlashesAction, ServerHeaderTransformation,
};
use legate_config::protocol::HeadersWithUnderscoresAction;

use super::path;
use super::response_body::{ResponseBody, StreamCompletion};
use super::ConnectionContext;
use crate::filters::http::router::{self, authority_of, HeaderParsers, RouterOutcome, RouterRequest};
use crate::http::body::{BodySource, Incoming, ReadAllError};
use crate::http::filter::{FilterCallbacks, FilterHeadersStatus, HttpFilter};
use crate::http::headers::{self, X_FORWARDED_FOR, X_FORWARDED_PROTO, X_REQUEST_ID};
use crate::http::io::DownstreamUpgrade;
use crate::http::{LocalReply, RequestSnapshot, ResponseFlag, StreamInfo};
use crate::router::{MatchInput, Route, RouteConfig, RouteKind, VirtualHost};
use crate::worker::reused::Reused;
use http::uri::PathAndQuery;

/// A request from hyper's codecs (HTTP/2, and HTTP/1.1 with `header_key_format`).
pub async fn handle(
    context: Rc<ConnectionContext>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<ResponseBody>, ResetStream> {
    let mut request = request;
    let upgrade = upgrade_type(request.method(), request.version(), request.headers())
        .map(|kind| (kind, DownstreamUpgrade::Hyper(hyper::upgrade::on(&mut request))));
    let (head, incoming) = request.into_parts();
    let end_stream = http_body::Body::is_end_stream(&incoming);
    let (head, body) = serve_stream(context, Reused::new(head), Incoming::Hyper(incoming), end_stream, upgrade).await;
    if head.extensions.get::<ResetStream>().is_some() {
        // hyper resets the stream of a request its service fails (INTERNAL_ERROR).
        return Err(ResetStream);
    }
    Ok(Response::from_parts(Reused::into_inner(head), body))
}

/// A stream reset rather than answered (see [`LocalReply::reset_stream`]): the response
/// head carries it to [`handle`], which fails the request for hyper to reset it.
#[derive(Debug, Clone, Copy)]
pub struct ResetStream;

impl std::fmt::Display for ResetStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stream reset by the connection manager")
    }
}

impl std::error::Error for ResetStream {}

/// One request, whichever codec read it: `upgrade` is the kind of upgrade it asks for (see
/// [`upgrade_type`]) and the downstream side of it.
///
/// The request head is boxed: it goes down a chain of futures, and moving it by value cost a
/// copy of its 224 bytes at each step (17 such copies per request). The response head comes
/// back boxed for the same reason.
pub async fn serve_stream(
    context: Rc<ConnectionContext>,
    head: Reused<http::request::Parts>,
    incoming: Incoming,
    end_stream: bool,
    upgrade: Option<(String, DownstreamUpgrade)>,
) -> (Reused<http::response::Parts>, ResponseBody) {
    let shared = &context.shared;
    let stats = &shared.stats;
    stats.downstream_rq_total.inc();
    if context.http2 {
        stats.downstream_rq_http2_total.inc();
    } else {
        stats.downstream_rq_http1_total.inc();
    }
    stats.downstream_rq_active.inc();
    context.active_streams.set(context.active_streams.get() + 1);
    let info = &context.info;
    let mut stream_info = Reused::new(StreamInfo::new(head.version, info.id, info.remote_address, info.local_address));
    if let Some(ssl) = &info.ssl {
        stream_info.requested_server_name = ssl.server_name.clone();
        stream_info.downstream_ssl = Some(ssl.clone());
    }
    let mut completion = StreamCompletion::new(context.clone(), stream_info);
    let mut head = head;
    let buffer_limit = context.buffer_limit;
    let body = BodySource::new(incoming, end_stream, buffer_limit);

    let response = match prepare(&context, &mut head, &mut completion) {
        Err(reply) if reply.reset_stream => {
            snapshot_request(&context, &head, &mut completion.info);
            // Envoy's connection manager counts the codec's reset as a reset stream and logs
            // the stream with no response.
            stats.downstream_rq_rx_reset.inc();
            completion.info.set_flag(ResponseFlag::DownstreamProtocolError);
            completion.info.response_code_details = Some(std::borrow::Cow::Owned(reply.details));
            completion.finish(false);
            let (mut parts, ()) = Response::new(()).into_parts();
            parts.extensions.insert(ResetStream);
            return (Reused::new(parts), ResponseBody::full(Bytes::new(), completion));
        }
        Err(reply) => {
            // Refused before the copy for the logs was taken: the logs still show the request
            // (Envoy's checks run on the headers it logs).
            snapshot_request(&context, &head, &mut completion.info);
            local_reply(&context, *reply, &mut completion, Routed::NONE, &mut [])
        }
        // Pinned where it is built, as the router's future in it.
        Ok(()) => std::pin::pin!(decode(&context, head, body.clone(), upgrade, &mut completion)).await,
    };
    // The answer is chosen: what the downstream has sent by now, whoever answered (a check,
    // a filter, the router, an upstream).
    let still_arriving = match body.try_borrow() {
        Ok(source) => {
            received(&mut completion.info, &source);
            !source.complete
        }
        Err(_) => false,
    };
    if still_arriving {
        // Envoy's `encodeHeaders`: a response started before the request ended.
        context.shared.stats.downstream_rq_response_before_rq_complete.inc();
        completion.request_body = Some(body);
    }
    let (parts, body) = response;
    (parts, finish_body(body, completion))
}

/// What `decode` produced: a response head and its body source.
enum Produced {
    Full(Bytes),
    Upstream(Reused<crate::filters::network::http_connection_manager::response_body::UpstreamBody>),
}

fn finish_body(body: Produced, completion: StreamCompletion) -> ResponseBody {
    match body {
        Produced::Full(bytes) => ResponseBody::full(bytes, completion),
        Produced::Upstream(upstream) => ResponseBody::upstream(upstream, completion),
    }
}

/// What the downstream has sent when the stream's answer is chosen, and again at the
/// stream's end if it was still sending: its body's bytes (`%BYTES_RECEIVED%`) and, once the
/// request is whole, when it ended (`DS_RX_END`, `%REQUEST_DURATION%`).
pub(super) fn received(info: &mut StreamInfo, body: &BodySource) {
    info.bytes_received = body.bytes_received;
    info.last_downstream_rx_byte = body.completed_at.map(|at| at.saturating_duration_since(info.start));
}

/// Request checks and the connection manager's own request headers. `Err` is the reply.
fn prepare(
    context: &ConnectionContext,
    head: &mut http::request::Parts,
    completion: &mut StreamCompletion,
) -> Result<(), Box<LocalReply>> {
    let shared = &context.shared;
    let config = &shared.config;
    let stats = &shared.stats;
    let info = &mut completion.info;

    if head.version == Version::HTTP_10 || head.version == Version::HTTP_09 {
        let http1 = config.http_protocol_options.as_ref();
        if !http1.is_some_and(|o| o.accept_http_10) {
            // Envoy refuses HTTP/1.0 unless `accept_http_10` is set.
            return Err(Box::new(LocalReply::new(StatusCode::UPGRADE_REQUIRED, "", "low_version")));
        }
        if !head.headers.contains_key(http::header::HOST) && head.uri.authority().is_none() {
            let default_host = http1.map(|o| o.default_host_for_http_10.as_str()).unwrap_or_default();
            if let Ok(v) = HeaderValue::from_str(default_host) {
                if !v.is_empty() {
                    head.headers.insert(http::header::HOST, v);
                }
            }
        }
    }
    // An HTTP/1.1 absolute URL's scheme (Envoy's codec): `http` or `https`, and `https` not
    // in the clear at the edge (`use_remote_address` with no trusted hops).
    if head.version != Version::HTTP_2 && head.method != Method::CONNECT {
        if let Some(scheme) = head.uri.scheme() {
            if *scheme != http::uri::Scheme::HTTP && *scheme != http::uri::Scheme::HTTPS {
                return Err(Box::new(
                    LocalReply::new(StatusCode::BAD_REQUEST, "", "http1.invalid_scheme")
                        .with_flag(ResponseFlag::DownstreamProtocolError),
                ));
            }
            let edge = config.use_remote_address() && config.xff_num_trusted_hops == 0;
            if edge && *scheme == http::uri::Scheme::HTTPS && context.info.ssl.is_none() {
                return Err(Box::new(
                    LocalReply::new(StatusCode::FORBIDDEN, "", "http1.https_url_on_plaintext_connection")
                        .with_flag(ResponseFlag::DownstreamProtocolError),
                ));
            }
        }
    }
    // Headers hyper's HTTP/2 codec does not count against `max_headers_count`.
    if head.headers.len() > shared.max_headers_count {
        return Err(Box::new(
            LocalReply::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "", "too_many_headers")
                .with_flag(ResponseFlag::DownstreamProtocolError),
        ));
    }
    let underscores =
        config.common_http_protocol_options.as_ref().map(|o| o.headers_with_underscores_action).unwrap_or_default();
    if underscores != HeadersWithUnderscoresAction::Allow {
        let with_underscore: Vec<HeaderName> =
            head.headers.keys().filter(|k| k.as_str().contains('_')).cloned().collect();
        if !with_underscore.is_empty() {
            // Envoy's codecs count these, under `http1.` or `http2.`, and name the reply after
            // the codec.
            let (codec_stats, details) = match context.http2 {
                false => (&shared.http1_underscores, "http1.unexpected_underscore"),
                true => (&shared.http2_underscores, "http2.unexpected_underscore"),
            };
            if underscores == HeadersWithUnderscoresAction::RejectRequest {
                codec_stats.requests_rejected_with_underscores_in_headers.inc();
                // HTTP/1.1 answers 400; Envoy's HTTP/2 codec resets the stream.
                let mut reply = LocalReply::new(StatusCode::BAD_REQUEST, "", details)
                    .with_flag(ResponseFlag::DownstreamProtocolError);
                reply.reset_stream = context.http2;
                return Err(Box::new(reply));
            }
            for name in with_underscore {
                head.headers.remove(&name);
                codec_stats.dropped_headers_with_underscores.inc();
            }
        }
    }
    // RFC 9113 §8.2.1: an HTTP/2 field value may not start or end with whitespace (HTTP/1.1's
    // parser trims it; HTTP/2 hands it over as sent).
    if head.version == Version::HTTP_2
        && head.headers.values().any(|v| {
            let b = v.as_bytes();
            b.first().is_some_and(|c| *c == b' ' || *c == b'\t') || b.last().is_some_and(|c| *c == b' ' || *c == b'\t')
        })
    {
        return Err(Box::new(
            LocalReply::new(StatusCode::BAD_REQUEST, "", "invalid_http_header")
                .with_flag(ResponseFlag::DownstreamProtocolError),
        ));
    }
    // RFC 9112 §3.2: more than one Host, or an invalid one, is a 400.
    let mut hosts = head.headers.get_all(http::header::HOST).iter();
    let host = hosts.next();
    let more_hosts = hosts.next().is_some();
    // `authority_of`, with the one lookup above.
    let authority = match head.uri.authority() {
        Some(a) => a.as_str(),
        None => host.and_then(|v| v.to_str().ok()).unwrap_or_default(),
    };
    if more_hosts || !valid_authority(authority) || head.uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(Box::new(
            LocalReply::new(StatusCode::BAD_REQUEST, "", "invalid_host")
                .with_flag(ResponseFlag::DownstreamProtocolError),
        ));
    }
    if head.method != Method::CONNECT && authority.is_empty() {
        return Err(Box::new(
            LocalReply::new(StatusCode::BAD_REQUEST, "", "missing_host_header")
                .with_flag(ResponseFlag::DownstreamProtocolError),
        ));
    }
    if head.method != Method::CONNECT && !head.uri.path().starts_with('/') && head.uri.path() != "*" {
        stats.downstream_rq_non_relative_path.inc();
        return Err(Box::new(LocalReply::new(StatusCode::NOT_FOUND, "", "absolute_path_rejected")));
    }
    // Envoy's `maybeNormalizeHost`, before routing: the host as the route table and the
    // upstream see it.
    if config.strip_trailing_host_dot || config.strip_any_host_port || config.strip_matching_host_port {
        let listener_port = context.info.local_address.port();
        let normalized = normalize_host(
            authority,
            config.strip_trailing_host_dot,
            config.strip_any_host_port,
            config.strip_matching_host_port.then_some(listener_port),
        );
        if let Some(normalized) = normalized {
            set_authority(head, &normalized);
        }
    }

    // Path normalization.
    if let Some(pq) = head.uri.path_and_query().cloned() {
        // Each step copies the path only when it changes it.
        let original = pq.path();
        let mut path = std::borrow::Cow::Borrowed(original);
        match config.path_with_escaped_slashes_action {
            PathWithEscapedSlashesAction::RejectRequest if path::has_escaped_slashes(&path) => {
                stats.downstream_rq_failed_path_normalization.inc();
                return Err(Box::new(LocalReply::new(StatusCode::BAD_REQUEST, "", "path_normalization_failed")));
            }
            PathWithEscapedSlashesAction::UnescapeAndForward | PathWithEscapedSlashesAction::UnescapeAndRedirect
                if path::has_escaped_slashes(&path) =>
            {
                path = std::borrow::Cow::Owned(path::unescape_slashes(&path));
            }
            _ => {}
        }
        if config.normalize_path.unwrap_or(false) && (path::has_dot_segments(&path) || !path.starts_with('/')) {
            match path::remove_dot_segments(&path) {
                Some(p) => path = std::borrow::Cow::Owned(p),
                None => {
                    stats.downstream_rq_failed_path_normalization.inc();
                    return Err(Box::new(LocalReply::new(StatusCode::BAD_REQUEST, "", "path_normalization_failed")));
                }
            }
        }
        if config.merge_slashes && path::has_repeated_slashes(&path) {
            path = std::borrow::Cow::Owned(path::merge_slashes(&path));
        }
        if path != original {
            let redirect = config.path_with_escaped_slashes_action == PathWithEscapedSlashesAction::UnescapeAndRedirect
                && path::has_escaped_slashes(original);
            let new_pq = match pq.query() {
                Some(q) => format!("{path}?{q}"),
                None => path.into_owned(),
            };
            if redirect {
                stats.downstream_rq_redirected_with_normalized_path.inc();
                let mut reply = LocalReply::new(StatusCode::TEMPORARY_REDIRECT, "", "path_normalization_redirect");
                if let Ok(v) = HeaderValue::from_str(&new_pq) {
                    reply.headers.insert(LOCATION, v);
                }
                return Err(Box::new(reply));
            }
            let mut parts = head.uri.clone().into_parts();
            parts.path_and_query = new_pq.parse().ok();
            if let Ok(uri) = http::Uri::from_parts(parts) {
                head.uri = uri;
            }
        }
    }

    // x-forwarded-for and the downstream's address; x-forwarded-proto is the downstream
    // connection's scheme (`https` when this listener terminated TLS).
    let tls = context.info.ssl.is_some();
    let scheme = HeaderValue::from_static(if tls { "https" } else { "http" });
    let peer = context.info.remote_address;
    let use_remote_address = config.use_remote_address();
    let internal = is_internal(peer.ip());
    let carried = Carried::of(&head.headers);
    // The scheme `x-forwarded-proto` names once settled (`None`: neither http nor https).
    let forwarded_scheme;
    if use_remote_address {
        if !config.skip_xff_append {
            append_xff(&mut head.headers, peer.ip());
        }
        head.headers.insert(X_FORWARDED_PROTO.clone(), scheme.clone());
        forwarded_scheme = Some(tls);
        if internal {
            head.headers.insert(headers::X_ENVOY_INTERNAL.clone(), HeaderValue::from_static("true"));
        } else {
            if carried.envoy {
                head.headers.remove(&headers::X_ENVOY_INTERNAL);
                sanitize_external(&mut head.headers);
            }
            if let Ok(v) = HeaderValue::from_str(&peer.ip().to_string()) {
                head.headers.insert(headers::X_ENVOY_EXTERNAL_ADDRESS.clone(), v);
            }
        }
    } else {
        let client = carried.forwarded_for.then(|| xff_address(&head.headers, config.xff_num_trusted_hops as usize));
        if let Some(ip) = client.flatten() {
            info.downstream_remote_address = SocketAddr::new(ip, 0);
        }
        let proto = head.headers.entry(&X_FORWARDED_PROTO).or_insert_with(|| scheme.clone()).as_bytes();
        forwarded_scheme = match proto {
            _ if proto.eq_ignore_ascii_case(b"https") => Some(true),
            _ if proto.eq_ignore_ascii_case(b"http") => Some(false),
            _ => None,
        };
    }
    info.scheme = request_scheme(config, head, forwarded_scheme.unwrap_or(tls));
    let ssl = context.info.ssl.as_deref();
    // Without a client certificate, all there is to do is to remove the field if sent.
    if carried.client_cert || ssl.is_some_and(|s| s.peer_certificate.is_some()) {
        super::forward_client_cert::apply(
            &mut head.headers,
            config.forward_client_cert_details,
            config.set_current_client_cert_details.as_ref(),
            ssl,
        );
    }
    // x-request-id.
    let external = use_remote_address && !internal;
    let regenerate = external && !config.preserve_external_request_id;
    info.request_id = match head.headers.entry(&X_REQUEST_ID) {
        http::header::Entry::Occupied(mut kept) => {
            if regenerate && config.generate_request_id.unwrap_or(true) {
                kept.insert(headers::uuid4_header());
            }
            Some(kept.get().clone())
        }
        http::header::Entry::Vacant(missing) if config.generate_request_id.unwrap_or(true) => {
            Some(missing.insert(headers::uuid4_header()).clone())
        }
        http::header::Entry::Vacant(_) => None,
    };
    if let Some(via) = &shared.via {
        head.headers.append(VIA, via.clone());
    }
    info.grpc_request = crate::router::route::is_grpc(&head.headers);
    snapshot_request(context, head, info);
    Ok(())
}

/// The request as the access logs and formatters see it (`%REQ(...)%`), kept only where
/// something reads it.
fn snapshot_request(context: &ConnectionContext, head: &http::request::Parts, info: &mut StreamInfo) {
    let shared = &context.shared;
    if !shared.access_logs.is_empty() || shared.route_config.uses_formatters() || shared.local_reply.is_some() {
        info.request = Some(Box::new(RequestSnapshot {
            method: head.method.clone(),
            path: head.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default(),
            authority: authority_of(head).to_string(),
            scheme: info.scheme.clone(),
            headers: head.headers.clone(),
        }));
    }
}

/// The request's `:scheme` once `x-forwarded-proto` is settled: `scheme_to_overwrite` (which
/// also sets `x-forwarded-proto`), else the request line's (HTTP/2, an HTTP/1.1 absolute
/// URL), else `forwarded_https`: whether `x-forwarded-proto` says `https` when it names a
/// scheme, else whether the connection is TLS.
fn request_scheme(config: &HcmConfig, head: &mut http::request::Parts, forwarded_https: bool) -> http::uri::Scheme {
    use http::uri::Scheme;
    let of = |https: bool| if https { Scheme::HTTPS } else { Scheme::HTTP };
    let overwrite = config.scheme_header_transformation.as_ref().and_then(|t| t.scheme_to_overwrite.as_deref());
    if let Some(overwrite) = overwrite {
        let https = overwrite == "https";
        head.headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(if https { "https" } else { "http" }));
        if head.uri.scheme().is_some() {
            let mut parts = head.uri.clone().into_parts();
            parts.scheme = Some(of(https));
            if let Ok(uri) = http::Uri::from_parts(parts) {
                head.uri = uri;
            }
        }
        return of(https);
    }
    match head.uri.scheme() {
        Some(scheme) => scheme.clone(),
        None => of(forwarded_https),
    }
}

/// Runs the filters, the route's action and the router.
async fn decode(
    context: &Rc<ConnectionContext>,
    mut head: Reused<http::request::Parts>,
    body: Rc<std::cell::RefCell<BodySource>>,
    upgrade: Option<(String, DownstreamUpgrade)>,
    completion: &mut StreamCompletion,
) -> (Reused<http::response::Parts>, Produced) {
    let shared = &context.shared;
    let route_config = shared.route_config.current();
    // `internal_only_headers`: gone from requests from outside before any filter sees them.
    if !route_config.internal_only_headers.is_empty()
        && head.headers.get(&headers::X_ENVOY_INTERNAL).is_none_or(|v| v.as_bytes() != b"true")
    {
        for name in &route_config.internal_only_headers {
            head.headers.remove(name);
        }
    }
    // Handles that share the request's bytes: the filters below may change the head.
    let authority = router::Authority::of(&head);
    // Borrowed from the table, which the request holds to its end.
    let vhost = route_config.virtual_host(authority.as_str());
    let path_and_query = head.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    let (path, query) = (path_and_query.path(), path_and_query.query());
    let scheme = completion.info.scheme.as_str();
    let route = vhost
        .as_ref()
        .and_then(|vh| vh.route(&MatchInput { path, query, head: &head, scheme, random: fastrand::u64(..) }));
    completion.info.virtual_host_name = vhost.map(|v| v.name.clone());
    completion.info.route_name = route.filter(|r| !r.name.is_empty()).map(|r| r.name.clone());
    // A route's cluster is known with the route (Envoy's `refreshCachedRoute`), a weighted
    // one picked then: a filter's local reply logs it too, a filter may match on it, and the
    // router takes it from here.
    let mut weighted = None;
    if let Some(RouteKind::Route(action)) = route.map(|r| &r.kind) {
        let name = match &action.cluster {
            crate::router::ClusterSpecifier::Cluster(name) => Some(name.clone()),
            crate::router::ClusterSpecifier::Weighted { .. } => {
                weighted = router::pick_weighted(&action.cluster, &head.headers);
                weighted.as_ref().map(|(name, _)| name.clone())
            }
            crate::router::ClusterSpecifier::Header(_) => None,
        };
        if let Some(name) = name {
            completion.info.upstream_cluster =
                context.worker.cluster_manager.get(&name).map(crate::http::stream_info::UpstreamCluster);
        }
    }
    let routed = Routed { config: Some(&route_config), vhost, route };
    // Envoy's `traceRequest`: decided and started once the route is known, before the filters.
    if let Some(tracer) = &shared.tracer {
        let trace = route.and_then(|r| r.trace.as_deref());
        let started = tracer.trace_request(&mut head, trace, authority.as_str(), &completion.info);
        completion.info.trace = Some(started);
        // The id now carries the decision, in the logs and a response that echoes it too.
        if completion.info.request_id.is_some() {
            completion.info.request_id = head.headers.get(&X_REQUEST_ID).cloned();
        }
    }

    // The HTTP filters, in order.
    let mut filters: Vec<Box<dyn HttpFilter>> = shared
        .filters
        .iter()
        .filter(|(factory, disabled)| filter_enabled(factory.name(), *disabled, route, vhost, &route_config))
        .map(|(factory, _)| factory.create())
        .collect();
    let end_stream = body.borrow().is_empty_and_complete();
    for index in 0..filters.len() {
        let ran = index + 1;
        let Some(filter) = filters.get_mut(index) else { break };
        let mut cb = FilterCallbacks {
            stream_info: &mut completion.info,
            route_config: &route_config,
            virtual_host: vhost,
            route,
            worker: &context.worker,
            server_draining: context.draining.get(),
        };
        let mut status = filter.decode_headers(&mut head, end_stream, &mut cb);
        if matches!(status, FilterHeadersStatus::StopIteration) {
            status = std::future::poll_fn(|cx| filter.poll_resume(cx, &mut head, &mut cb)).await;
        }
        match status {
            FilterHeadersStatus::Continue | FilterHeadersStatus::StopIteration => {}
            FilterHeadersStatus::LocalReply(reply) => {
                return local_reply(context, reply, completion, routed, &mut filters[..ran]);
            }
            FilterHeadersStatus::StopAllIterationAndBuffer => {
                match BodySource::read_all(&body, filter.max_buffered_body()).await {
                    Ok(()) => {
                        let mut bytes = body.borrow().logged();
                        if let Some(reply) = filter.decode_body(&mut head, &mut bytes, &mut cb) {
                            return local_reply(context, reply, completion, routed, &mut filters[..ran]);
                        }
                        head.headers.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                        body.borrow_mut().set_logged(bytes);
                    }
                    Err(ReadAllError::TooLarge) => {
                        shared.stats.downstream_rq_too_large.inc();
                        let reply = LocalReply::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "Payload Too Large",
                            "request_payload_too_large",
                        );
                        return local_reply(context, reply, completion, routed, &mut filters[..ran]);
                    }
                    Err(ReadAllError::Downstream) => {
                        shared.stats.downstream_rq_rx_reset.inc();
                        let reply = LocalReply::new(StatusCode::BAD_REQUEST, "", "downstream_remote_disconnect")
                            .with_flag(ResponseFlag::DownstreamConnectionTermination);
                        return local_reply(context, reply, completion, routed, &mut filters[..ran]);
                    }
                }
            }
        }
    }
    // As the router's header formatters see it; set again once the answer is chosen
    // (`serve_stream`).
    received(&mut completion.info, &body.borrow());

    // The route's action.
    shared.stats.rq_total.inc();
    // `require_tls`: Envoy's TLS redirect route, a 301 to the same URL over https.
    if vhost.is_some_and(|vh| vh.redirects_to_https(completion.info.scheme.as_str(), &head.headers)) {
        shared.stats.rq_redirect.inc();
        let mut reply = LocalReply::new(StatusCode::MOVED_PERMANENTLY, Bytes::new(), "direct_response");
        if let Ok(v) = HeaderValue::from_str(&format!("https://{}{}", authority.as_str(), path_and_query.as_str())) {
            reply.headers.insert(LOCATION, v);
        }
        return local_reply(context, reply, completion, routed, &mut filters);
    }
    let Some(route) = route else {
        shared.stats.no_route.inc();
        return local_reply(context, LocalReply::no_route(), completion, routed, &mut filters);
    };
    let action = match &route.kind {
        RouteKind::Redirect(redirect) => {
            shared.stats.rq_redirect.inc();
            let location = redirect.location(
                completion.info.scheme.as_str(),
                authority.as_str(),
                path,
                query,
                matched_prefix(route, path),
            );
            let mut reply = LocalReply::new(redirect.status, Bytes::new(), "direct_response");
            if let Ok(v) = HeaderValue::from_str(&location) {
                reply.headers.insert(LOCATION, v);
            }
            return local_reply(context, reply, completion, routed, &mut filters);
        }
        RouteKind::DirectResponse(direct) => {
            shared.stats.rq_direct_response.inc();
            let mut reply = LocalReply::new(direct.status, direct.body.clone(), "direct_response");
            // RFC 9110 §15.3.2 and §15.4: a 201 or a 3xx says where; Envoy's router points
            // at the request's own URL.
            if direct.status == StatusCode::CREATED || direct.status.is_redirection() {
                let url = format!("{}://{}{}", completion.info.scheme.as_str(), authority.as_str(), path_and_query);
                if let Ok(v) = HeaderValue::from_str(&url) {
                    reply.headers.insert(LOCATION, v);
                }
            }
            if let Some(format) = &direct.body_format {
                format_body(&mut reply, format, &mut completion.info);
            }
            return local_reply(context, reply, completion, routed, &mut filters);
        }
        RouteKind::Route(action) => action,
    };
    if let Some((kind, _)) = &upgrade {
        let hcm_enabled = shared
            .config
            .upgrade_configs
            .iter()
            .find(|u| u.upgrade_type.eq_ignore_ascii_case(kind))
            .map(|u| u.enabled.unwrap_or(true));
        if !action.upgrade_allowed(kind, hcm_enabled) {
            if kind.eq_ignore_ascii_case("websocket") {
                shared.stats.downstream_rq_ws_on_non_ws_route.inc();
            }
            let reply = LocalReply::new(StatusCode::FORBIDDEN, Bytes::new(), "upgrade_failed");
            return local_reply(context, reply, completion, routed, &mut filters);
        }
    }
    // Envoy's `per_request_buffer_limit_bytes`: the route's, else the virtual host's, bounds
    // what is kept for retries in place of the connection's buffer limit.
    if let Some(limit) = route.per_request_buffer_limit_bytes.or(vhost.and_then(|v| v.per_request_buffer_limit_bytes)) {
        body.borrow_mut().set_replay_limit(limit as usize);
    }
    let header_parsers = header_parsers(&route_config, vhost, route, true);
    let include_attempt_count = vhost.is_some_and(|v| v.include_attempt_count_in_request);
    // Pinned where it is built: a future moved into `.await` is copied whole (~4 KB).
    let outcome = {
        let routing = std::pin::pin!(router::route(
            RouterRequest {
                context,
                info: &mut completion.info,
                action,
                // Still the head's when no filter ran.
                authority: filters.is_empty().then_some(authority),
                body: body.clone(),
                matched_prefix: matched_prefix(route, path),
                header_parsers,
                include_attempt_count,
                upgrade,
                weighted,
            },
            head,
        ));
        routing.await
    };
    match outcome {
        RouterOutcome::LocalReply(reply) => local_reply(context, reply, completion, routed, &mut filters),
        RouterOutcome::Upstream { mut head, body, weighted_index } => {
            // Looked up only for a 101: it goes with the hop-by-hop fields below.
            let switching = head.status == StatusCode::SWITCHING_PROTOCOLS;
            let upgrade = switching.then(|| head.headers.get(http::header::UPGRADE).cloned()).flatten();
            headers::strip_hop_by_hop(&mut head.headers);
            if let (StatusCode::SWITCHING_PROTOCOLS, Some(upgrade)) = (head.status, upgrade) {
                head.headers.insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
                head.headers.insert(http::header::UPGRADE, upgrade);
            }
            if let (Some(i), RouteKind::Route(action)) = (weighted_index, &route.kind) {
                if let crate::router::ClusterSpecifier::Weighted { clusters, .. } = &action.cluster {
                    if let Some(entry) = clusters.get(i) {
                        entry.response_headers.evaluate(&mut head.headers, &completion.info);
                    }
                }
            }
            encode(context, &mut head, completion, routed, &mut filters);
            (head, Produced::Upstream(body))
        }
    }
}

/// Whether a filter runs for this route: a per-filter config `FilterConfig { disabled: true }`
/// turns it off; a filter disabled in the connection manager runs only where a route (or
/// virtual host) gives it a config.
fn filter_enabled(
    name: &str,
    disabled_by_default: bool,
    route: Option<&Arc<Route>>,
    vhost: Option<&Arc<VirtualHost>>,
    route_config: &RouteConfig,
) -> bool {
    use legate_config::route::FilterPerRouteConfig;
    let per_route = route
        .and_then(|r| r.per_filter_config.get(name))
        .or_else(|| vhost.and_then(|v| v.per_filter_config.get(name)))
        .or_else(|| route_config.per_filter_config.get(name));
    match per_route {
        Some(FilterPerRouteConfig::Disabled) => false,
        Some(_) => true,
        None => !disabled_by_default,
    }
}

/// The upgrade a request asks for: its `upgrade` header (HTTP/1.1 with `connection: upgrade`)
/// or `CONNECT`.
pub fn upgrade_type(method: &Method, version: Version, headers: &http::HeaderMap) -> Option<String> {
    if method == Method::CONNECT {
        return Some("CONNECT".into());
    }
    if version == Version::HTTP_2 {
        return None;
    }
    let connection_upgrade = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return None;
    }
    // `Upgrade: h2c` is ignored and the request served as HTTP/1.1, as Envoy does (the
    // hop-by-hop headers go when it is forwarded).
    headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().eq_ignore_ascii_case("h2c"))
        .map(str::to_string)
}

/// The part of `path` the route matched, which `prefix_rewrite` replaces (Envoy's
/// `rewritePathHeader`): the prefix, the whole path of a `path` or `safe_regex` match.
fn matched_prefix<'a>(route: &'a Route, path: &'a str) -> Option<&'a str> {
    use crate::router::route::PathMatch;
    match &route.path {
        PathMatch::Prefix(p) | PathMatch::SeparatedPrefix(p) | PathMatch::Exact(p) => Some(p.as_str()),
        PathMatch::Regex(_) => Some(path),
        PathMatch::Connect => None,
    }
}

/// The header mutations that apply, in Envoy's order: the most specific level is applied
/// first and the route configuration last (so it wins), unless
/// `most_specific_header_mutations_wins` reverses that.
fn header_parsers<'a>(
    rc: &'a crate::router::RouteConfig,
    vhost: Option<&'a Arc<VirtualHost>>,
    route: &'a Arc<Route>,
    request: bool,
) -> HeaderParsers<'a> {
    let pick = |r: &'a crate::router::HeaderParser, s: &'a crate::router::HeaderParser| if request { r } else { s };
    let mut parsers = [
        Some(pick(&route.request_headers, &route.response_headers)),
        vhost.map(|v| pick(&v.request_headers, &v.response_headers)),
        Some(pick(&rc.request_headers, &rc.response_headers)),
    ];
    if rc.most_specific_header_mutations_wins {
        parsers.reverse();
    }
    for slot in &mut parsers {
        if slot.is_some_and(|p| p.is_empty()) {
            *slot = None;
        }
    }
    parsers
}

/// What a request was routed with, borrowed from the route table it holds.
#[derive(Clone, Copy)]
struct Routed<'a> {
    /// `None` before routing.
    config: Option<&'a Arc<RouteConfig>>,
    vhost: Option<&'a Arc<VirtualHost>>,
    route: Option<&'a Arc<Route>>,
}

impl Routed<'_> {
    const NONE: Routed<'static> = Routed { config: None, vhost: None, route: None };
}

/// Response headers on their way out: the encoder filters (reverse order), the route's
/// header mutations and the connection manager's own headers.
fn encode(
    context: &Rc<ConnectionContext>,
    head: &mut http::response::Parts,
    completion: &mut StreamCompletion,
    routed: Routed<'_>,
    filters: &mut [Box<dyn HttpFilter>],
) {
    let shared = &context.shared;
    let Routed { config, vhost, route } = routed;
    // The table the request was routed with; before routing, the current one.
    let route_config = config.map_or_else(|| shared.route_config.current(), std::borrow::Cow::Borrowed);
    // The route's response mutations come first (Envoy's router applies them as the response
    // arrives, and to its local replies): the encoder filters see, and may change, the result.
    if let Some(route) = route {
        for parser in header_parsers(&route_config, vhost, route, false).into_iter().flatten() {
            parser.evaluate(&mut head.headers, &completion.info);
        }
    }
    for filter in filters.iter_mut().rev() {
        let mut cb = FilterCallbacks {
            stream_info: &mut completion.info,
            route_config: &route_config,
            virtual_host: vhost,
            route,
            worker: &context.worker,
            server_draining: context.draining.get(),
        };
        filter.encode_headers(head, &mut cb);
        if let Some(transform) = filter.take_body_transform() {
            // In encoding order: an earlier filter's transform sees the later one's output.
            completion.body_transform = Some(match completion.body_transform.take() {
                None => transform,
                Some(first) => Box::new(crate::http::filter::ChainedTransforms::new(vec![first, transform])),
            });
        }
    }
    match shared.server_header_transformation() {
        ServerHeaderTransformation::Overwrite => {
            head.headers.insert(SERVER, shared.server_name.clone());
        }
        ServerHeaderTransformation::AppendIfAbsent => {
            if !head.headers.contains_key(SERVER) {
                head.headers.insert(SERVER, shared.server_name.clone());
            }
        }
        ServerHeaderTransformation::PassThrough => {}
    }
    if let Some(via) = &shared.via {
        head.headers.append(VIA, via.clone());
    }
    if vhost.is_some_and(|v| v.include_attempt_count_in_response) && completion.info.attempt_count > 0 {
        head.headers.insert(headers::X_ENVOY_ATTEMPT_COUNT.clone(), HeaderValue::from(completion.info.attempt_count));
    }
    if let Some(tracer) = &shared.tracer {
        let info = &mut *completion.info;
        if let Some(trace) = info.trace.as_deref_mut() {
            trace.on_response_headers(&mut head.headers, tracer.egress, info.request_id.as_ref());
        }
    }
    if shared.config.always_set_request_id_in_response {
        if let Some(id) = completion.info.request_id.clone() {
            head.headers.insert(X_REQUEST_ID.clone(), id);
        }
    }
    if context.draining.get() && !context.http2 {
        head.headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    // The downstream codec's version, whatever the upstream spoke (an HTTP/1.0 upstream's
    // answer to an HTTP/1.1 client is an HTTP/1.1 response, as Envoy's codec writes it).
    if !context.http2 {
        head.version = match completion.info.protocol {
            Version::HTTP_10 => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
    }
    let code = head.status.as_u16();
    completion.info.response_code = Some(code);
    if completion.info.response_code_details.is_none() {
        completion.info.response_code_details = Some(std::borrow::Cow::Borrowed("via_upstream"));
    }
    completion.info.first_downstream_tx_byte = Some(completion.info.elapsed());
    // Envoy's `chargeStats`: a response is counted as its head goes out, and not at all for a
    // request the health check filter answered or passed on.
    if !completion.info.health_check {
        shared.count_response(code);
    }
    completion.set_response_headers(&head.headers);
}

/// A reply made here, sent through the encoder filters that saw the request.
fn local_reply(
    context: &Rc<ConnectionContext>,
    reply: LocalReply,
    completion: &mut StreamCompletion,
    routed: Routed<'_>,
    filters: &mut [Box<dyn HttpFilter>],
) -> (Reused<http::response::Parts>, Produced) {
    if let Some(flag) = reply.flag {
        completion.info.set_flag(flag);
    }
    completion.info.response_code_details = Some(std::borrow::Cow::Owned(reply.details.clone()));
    let mut reply = reply;
    if let Some(mapper) = &context.shared.local_reply {
        map_local_reply(mapper, &mut reply, &mut completion.info);
    }
    if completion.info.grpc_request && !reply.tunnel {
        grpc_local_reply(&mut reply);
    }
    let mut head = Reused::new(Response::new(()).into_parts().0);
    head.status = reply.status;
    head.headers = reply.headers;
    if !reply.body.is_empty() && reply.text && !head.headers.contains_key(CONTENT_TYPE) {
        head.headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    if !reply.tunnel && !completion.info.grpc_request {
        head.headers.insert(CONTENT_LENGTH, HeaderValue::from(reply.body.len()));
    }
    encode(context, &mut head, completion, routed, filters);
    (head, Produced::Full(reply.body))
}

/// Envoy's local reply to a gRPC request: a trailers-only `200` whose `grpc-status` comes
/// from the HTTP status (unless one is set) and whose `grpc-message` is the body,
/// percent-encoded (`Utility::prepareLocalReply`).
fn grpc_local_reply(reply: &mut LocalReply) {
    static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
    static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
    let status = reply.status;
    reply.status = StatusCode::OK;
    reply.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    if !reply.headers.contains_key(&GRPC_STATUS) {
        reply.headers.insert(GRPC_STATUS.clone(), HeaderValue::from(http_to_grpc_status(status)));
    }
    let body = std::mem::take(&mut reply.body);
    // A JSON body format ends its line; a header value does not.
    let message = body.strip_suffix(b"\n").unwrap_or(&body);
    if !message.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&grpc_percent_encode(message)) {
            reply.headers.insert(GRPC_MESSAGE.clone(), value);
        }
    }
    reply.text = false;
}

/// Envoy's `Grpc::Utility::httpToGrpcStatus`.
pub(crate) fn http_to_grpc_status(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,                   // Internal
        401 => 16,                   // Unauthenticated
        403 => 7,                    // PermissionDenied
        404 => 12,                   // Unimplemented
        429 | 502 | 503 | 504 => 14, // Unavailable
        _ => 2,                      // Unknown
    }
}

/// `grpc-message`'s percent-encoding: bytes outside printable ASCII, and `%`.
fn grpc_percent_encode(message: &[u8]) -> String {
    let mut out = String::with_capacity(message.len());
    for &b in message {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The host after `strip_trailing_host_dot` and the port stripping (any port, or only
/// `matching` the listener's); `None` when unchanged. An IPv6 literal keeps its brackets.
fn normalize_host(authority: &str, trailing_dot: bool, any_port: bool, matching: Option<u16>) -> Option<String> {
    let (host, port) = crate::router::action::split_host_port(authority);
    let mut host = host;
    if trailing_dot && host.len() > 1 {
        host = host.strip_suffix('.').unwrap_or(host);
    }
    let port = port.filter(|p| !(any_port || matching.is_some_and(|m| p.parse::<u16>().ok() == Some(m))));
    let normalized = match port {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    (normalized != authority).then_some(normalized)
}

/// Sets the request's authority: the `host` header, and the URI's for HTTP/2 and absolute
/// URLs.
fn set_authority(head: &mut http::request::Parts, authority: &str) {
    let Ok(value) = HeaderValue::from_str(authority) else { return };
    if head.uri.authority().is_some() {
        let mut parts = head.uri.clone().into_parts();
        parts.authority = http::uri::Authority::try_from(authority).ok();
        if let Ok(uri) = http::Uri::from_parts(parts) {
            head.uri = uri;
        }
    }
    if head.headers.contains_key(http::header::HOST) || head.version != Version::HTTP_2 {
        head.headers.insert(http::header::HOST, value);
    }
}

/// `host[:port]` made of the characters RFC 3986 allows in a reg-name or IP literal.
fn valid_authority(authority: &str) -> bool {
    authority.bytes().all(|b| AUTHORITY_BYTES.get(usize::from(b)).copied().unwrap_or(false))
}

/// The bytes [`valid_authority`] allows, as a table: searching the punctuation list for each
/// byte cost ~10 instructions a byte on every request.
static AUTHORITY_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let punctuation = b"-._~!$&'()*+,;=:[]%";
    let mut i = 0;
    while i < punctuation.len() {
        table[punctuation[i] as usize] = true;
        i += 1;
    }
    table
};

/// `local_reply_config`: the first mapper whose filter matches rewrites the reply; then the
/// body format (the mapper's, else the config's) formats the body.
pub(super) fn map_local_reply(mapper: &super::LocalReplyMapper, reply: &mut LocalReply, info: &mut StreamInfo) {
    if reply.tunnel {
        return;
    }
    info.response_code = Some(reply.status.as_u16());
    let mut format = mapper.body_format.as_ref();
    if let Some(m) = mapper.mappers.iter().find(|m| m.filter.evaluate(info)) {
        if let Some(status) = m.status {
            reply.status = status;
        }
        if let Some(body) = &m.body {
            reply.body = body.clone();
        }
        m.headers.evaluate(&mut reply.headers, info);
        if m.body_format.is_some() {
            format = m.body_format.as_ref();
        }
    }
    if let Some(format) = format {
        format_body(reply, format, info);
    }
}

/// A `body_format` (local replies', direct responses'): the reply's body, as
/// `%LOCAL_REPLY_BODY%`, formatted; the format's `content-type` set.
fn format_body(
    reply: &mut LocalReply,
    (format, content_type): &(crate::access_log::LogFormat, HeaderValue),
    info: &mut StreamInfo,
) {
    info.response_code = Some(reply.status.as_u16());
    info.local_reply_body = Some(String::from_utf8_lossy(&reply.body).into_owned());
    let mut body = Vec::new();
    format.format_into(info, &mut body);
    reply.body = Bytes::from(body);
    reply.text = false;
    reply.headers.insert(CONTENT_TYPE, content_type.clone());
}

fn append_xff(headers: &mut http::HeaderMap, ip: IpAddr) {
    let ip = ip.to_string();
    let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.is_empty() => format!("{existing},{ip}"),
        _ => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
}

/// The client address from `x-forwarded-for`, skipping `trusted_hops` from the right.
fn xff_address(headers: &http::HeaderMap, trusted_hops: usize) -> Option<IpAddr> {
    let mut values = headers.get_all(&X_FORWARDED_FOR).iter();
    let first = values.next()?;
    let joined = match values.next() {
        None => String::from_utf8_lossy(first.as_bytes()),
        Some(_) => std::borrow::Cow::Owned(crate::router::retry_policy::joined(headers, &X_FORWARDED_FOR)?),
    };
    // The address `trusted_hops` from the right.
    joined.rsplit(',').map(str::trim).nth(trusted_hops)?.parse().ok()
}

/// Which of the fields the connection manager sanitizes a request carries, from one pass over
/// its names: most requests carry none, and each lookup of an absent field hashes its name
/// (~100 instructions for these), where the pass mostly compares lengths.
struct Carried {
    /// Some `x-envoy-*` field.
    envoy: bool,
    forwarded_for: bool,
    client_cert: bool,
}

impl Carried {
    fn of(headers: &http::HeaderMap) -> Self {
        let mut carried = Carried { envoy: false, forwarded_for: false, client_cert: false };
        for name in headers.keys() {
            if name.as_str().starts_with("x-envoy-") {
                carried.envoy = true;
            } else if *name == X_FORWARDED_FOR {
                carried.forwarded_for = true;
            } else if *name == super::forward_client_cert::X_FORWARDED_CLIENT_CERT {
                carried.client_cert = true;
            }
        }
        carried
    }
}

/// RFC 1918, loopback and unique-local addresses are internal, as Envoy's default.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// Headers an external client may not set (Envoy's internal-only `x-envoy-*` headers).
fn sanitize_external(headers: &mut http::HeaderMap) {
    // Names made once: a string key is parsed at every lookup.
    static INTERNAL_ONLY: [HeaderName; 14] = [
        HeaderName::from_static("x-envoy-decorator-operation"),
        HeaderName::from_static("x-envoy-downstream-service-cluster"),
        HeaderName::from_static("x-envoy-downstream-service-node"),
        HeaderName::from_static("x-envoy-expected-rq-timeout-ms"),
        HeaderName::from_static("x-envoy-force-trace"),
        HeaderName::from_static("x-envoy-ip-tags"),
        HeaderName::from_static("x-envoy-max-retries"),
        HeaderName::from_static("x-envoy-retry-grpc-on"),
        HeaderName::from_static("x-envoy-retry-on"),
        HeaderName::from_static("x-envoy-upstream-alt-stat-name"),
        HeaderName::from_static("x-envoy-upstream-rq-per-try-timeout-ms"),
        HeaderName::from_static("x-envoy-upstream-rq-timeout-alt-response"),
        HeaderName::from_static("x-envoy-upstream-rq-timeout-ms"),
        HeaderName::from_static("x-envoy-hedge-on-per-try-timeout"),
    ];
    for name in &INTERNAL_ONLY {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_normalization_keeps_ipv6_brackets_and_unmatched_ports() {
        assert_eq!(normalize_host("[::1]:80", false, true, None).as_deref(), Some("[::1]"));
        assert_eq!(normalize_host("a.example.:80", true, false, Some(80)).as_deref(), Some("a.example"));
        assert_eq!(normalize_host("a.example:81", false, false, Some(80)), None);
        assert_eq!(normalize_host(".", true, false, None), None);
    }

    #[test]
    fn the_client_is_trusted_hops_from_the_right_of_x_forwarded_for_over_all_its_fields() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let mut headers = http::HeaderMap::new();
        assert_eq!(xff_address(&headers, 0), None);
        headers.append(&X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.7, 10.0.0.1"));
        assert_eq!(xff_address(&headers, 0), ip("10.0.0.1"));
        assert_eq!(xff_address(&headers, 1), ip("203.0.113.7"));
        assert_eq!(xff_address(&headers, 2), None);
        headers.append(&X_FORWARDED_FOR, HeaderValue::from_static("192.0.2.1"));
        assert_eq!(xff_address(&headers, 0), ip("192.0.2.1"));
        assert_eq!(xff_address(&headers, 2), ip("203.0.113.7"));
        headers.insert(&X_FORWARDED_FOR, HeaderValue::from_static("not-an-address"));
        assert_eq!(xff_address(&headers, 0), None);
    }

    #[test]
    fn an_authority_is_valid_only_with_the_characters_rfc_3986_allows() {
        for ok in ["example.com", "127.0.0.1:10000", "[::1]:80", "a-b_c~d!$&'()*+,;=%20", "XN--Bcher-kva.example", ""] {
            assert!(valid_authority(ok), "{ok:?}");
        }
        for bad in [
            "exa mple.com",
            "host/path",
            "a\\b",
            "h\"o",
            "caf\u{e9}.fr",
            "a\tb",
            "x<y>",
            "a{b}",
            "a|b",
            "a^b",
            "q?x",
            "f#x",
            "a`b",
        ] {
            assert!(!valid_authority(bad), "{bad:?}");
        }
        // Every byte outside the allowed set is refused.
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b);
        for b in 0..=255u8 {
            assert_eq!(AUTHORITY_BYTES[usize::from(b)], allowed(b), "byte {b}");
        }
    }
}
