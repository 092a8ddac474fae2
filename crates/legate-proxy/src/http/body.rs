//! Request bodies on their way upstream, kept for replay by retries up to a limit.
//!
//! The downstream request body is read by one upstream attempt at a time. What it reads is
//! also logged, so that a retry can send the same bytes again; once the log would pass the
//! buffer limit it is dropped and the request is no longer retried (as Envoy: a request body
//! is buffered for retries only up to the buffer limit).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::worker::clock;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A downstream request's body, as its codec reads it.
pub enum Incoming {
    /// hyper's (HTTP/2, and HTTP/1.1 with `header_key_format`).
    Hyper(hyper::body::Incoming),
    Http1(super::h1_server::RequestBody),
}

impl Body for Incoming {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Incoming::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(BoxError::from),
            Incoming::Http1(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Incoming::Hyper(body) => body.is_end_stream(),
            Incoming::Http1(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Incoming::Hyper(body) => body.size_hint(),
            Incoming::Http1(body) => body.size_hint(),
        }
    }
}

/// Where request bytes come from.
enum Source {
    Incoming(Incoming),
    /// Everything is in the log (a buffering filter read it all, or there was no body).
    Ended,
}

pub struct BodySource {
    source: Source,
    log: Vec<Bytes>,
    log_bytes: usize,
    limit: usize,
    replayable: bool,
    trailers: Option<HeaderMap>,
    /// Body bytes read from the downstream so far.
    pub bytes_received: u64,
    /// The downstream sent its last byte.
    pub complete: bool,
    /// Set when reading the downstream failed (it reset or sent garbage).
    pub downstream_error: bool,
    /// When the last request byte arrived.
    pub completed_at: Option<std::time::Instant>,
    /// When request bytes last arrived (for `stream_idle_timeout`).
    pub last_activity: std::time::Instant,
    /// Bumped on every read from the downstream, for the router's timers and mirrors (each
    /// subscriber sees every change). Made at the first subscription: most requests have no
    /// body to wait for.
    progress: Option<tokio::sync::watch::Sender<()>>,
}

impl BodySource {
    pub fn new(incoming: Incoming, end_stream: bool, limit: usize) -> Rc<RefCell<Self>> {
        let now = clock::now();
        Rc::new(RefCell::new(BodySource {
            source: if end_stream { Source::Ended } else { Source::Incoming(incoming) },
            log: Vec::new(),
            log_bytes: 0,
            limit,
            replayable: true,
            trailers: None,
            bytes_received: 0,
            complete: end_stream,
            downstream_error: false,
            completed_at: end_stream.then_some(now),
            last_activity: now,
            progress: None,
        }))
    }

    /// A body already fully read (by a buffering filter, or a local body).
    pub fn buffered(chunks: VecDeque<Bytes>, trailers: Option<HeaderMap>) -> Rc<RefCell<Self>> {
        let log_bytes = chunks.iter().map(Bytes::len).sum();
        Rc::new(RefCell::new(BodySource {
            source: Source::Ended,
            log: chunks.into_iter().collect(),
            log_bytes,
            limit: usize::MAX,
            replayable: true,
            trailers,
            bytes_received: log_bytes as u64,
            complete: true,
            downstream_error: false,
            completed_at: Some(clock::now()),
            last_activity: clock::now(),
            progress: None,
        }))
    }

    /// The most bytes kept for replay (the route's `per_request_buffer_limit_bytes`, in place
    /// of the connection's limit). A body already past it is no longer replayable; what was
    /// read stays for the first attempt.
    pub fn set_replay_limit(&mut self, limit: usize) {
        self.limit = limit;
        if self.log_bytes > limit {
            self.replayable = false;
        }
    }

    /// A receiver that changes on every read from the downstream.
    pub fn subscribe_progress(&mut self) -> tokio::sync::watch::Receiver<()> {
        self.progress.get_or_insert_with(|| tokio::sync::watch::Sender::new(())).subscribe()
    }

    fn notify_progress(&self) {
        if let Some(progress) = &self.progress {
            progress.send_replace(());
        }
    }

    /// Whether a new attempt can send the whole body again.
    pub fn replayable(&self) -> bool {
        self.replayable
    }

    pub fn is_empty_and_complete(&self) -> bool {
        self.complete && self.log_bytes == 0 && self.trailers.is_none()
    }

    /// Reads the whole body (for filters that buffer). `Err(())` when it is over `max` bytes
    /// or the downstream failed.
    pub async fn read_all(this: &Rc<RefCell<Self>>, max: usize) -> Result<(), ReadAllError> {
        std::future::poll_fn(|cx| {
            let mut source = this.borrow_mut();
            loop {
                if source.log_bytes > max {
                    return Poll::Ready(Err(ReadAllError::TooLarge));
                }
                match source.poll_incoming(cx) {
                    Poll::Ready(Some(Ok(_))) => continue,
                    Poll::Ready(Some(Err(()))) => return Poll::Ready(Err(ReadAllError::Downstream)),
                    Poll::Ready(None) => return Poll::Ready(Ok(())),
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await
    }

    /// The logged body as one piece (after `read_all`).
    pub fn logged(&self) -> Bytes {
        match self.log.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut all = Vec::with_capacity(self.log_bytes);
                for chunk in many {
                    all.extend_from_slice(chunk);
                }
                Bytes::from(all)
            }
        }
    }

    /// Replaces the logged body (a filter changed it).
    pub fn set_logged(&mut self, body: Bytes) {
        self.log_bytes = body.len();
        self.log = if body.is_empty() { Vec::new() } else { vec![body] };
    }

    /// Reads one frame from the downstream into the log. `Some(Ok(index))`: a data frame
    /// logged at `index` (or `usize::MAX` when no longer logging, data returned by
    /// `take_unlogged`); `None`: the body ended.
    fn poll_incoming(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<usize, ()>>> {
        let Source::Incoming(incoming) = &mut self.source else {
            return Poll::Ready(None);
        };
        loop {
            match Pin::new(&mut *incoming).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.source = Source::Ended;
                    self.complete = true;
                    self.completed_at = Some(clock::now());
                    self.notify_progress();
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(_))) => {
                    self.source = Source::Ended;
                    self.downstream_error = true;
                    self.notify_progress();
                    return Poll::Ready(Some(Err(())));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if data.is_empty() {
                            continue;
                        }
                        self.bytes_received += data.len() as u64;
                        self.last_activity = clock::now();
                        self.log_bytes += data.len();
                        self.log.push(data);
                        if incoming.is_end_stream() {
                            // A sized body ends with its last byte: its reader may never poll
                            // again for the end.
                            self.source = Source::Ended;
                            self.complete = true;
                            self.completed_at = Some(clock::now());
                        }
                        self.notify_progress();
                        if self.replayable && self.log_bytes > self.limit {
                            // Too big to keep for a retry: stream it, keep only what the
                            // current attempt has not read yet.
                            self.replayable = false;
                        }
                        return Poll::Ready(Some(Ok(self.log.len() - 1)));
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.trailers = Some(trailers);
                        }
                    }
                },
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum ReadAllError {
    TooLarge,
    Downstream,
}

/// The request body of one upstream attempt.
pub struct AttemptBody {
    source: Rc<RefCell<BodySource>>,
    /// Next log entry to send.
    position: usize,
    trailers_sent: bool,
}

impl AttemptBody {
    pub fn new(source: Rc<RefCell<BodySource>>) -> Self {
        AttemptBody { source, position: 0, trailers_sent: false }
    }

    pub fn empty() -> Self {
        AttemptBody::new(BodySource::buffered(VecDeque::new(), None))
    }
}

impl Body for AttemptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut source = this.source.borrow_mut();
        loop {
            if let Some(chunk) = source.log.get(this.position) {
                let chunk = chunk.clone();
                this.position += 1;
                if !source.replayable {
                    // Nobody will need these bytes again: free them as they go.
                    let sent = this.position;
                    source.log.drain(..sent);
                    source.log_bytes = source.log.iter().map(Bytes::len).sum();
                    this.position = 0;
                }
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            match source.poll_incoming(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(()))) => {
                    return Poll::Ready(Some(Err("downstream request body failed".into())));
                }
                Poll::Ready(None) => {
                    if !this.trailers_sent {
                        this.trailers_sent = true;
                        if let Some(trailers) = source.trailers.clone() {
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let source = self.source.borrow();
        matches!(source.source, Source::Ended) && self.position >= source.log.len() && source.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let source = self.source.borrow();
        if matches!(source.source, Source::Ended) && source.trailers.is_none() {
            let remaining: usize = source.log.iter().skip(self.position).map(Bytes::len).sum();
            return SizeHint::with_exact(remaining as u64);
        }
        SizeHint::default()
    }
}
