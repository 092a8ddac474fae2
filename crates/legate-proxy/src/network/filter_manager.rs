//! Runs a connection's read and write filter chains (Envoy's `FilterManagerImpl`).

use std::task::Context;

use bytes::BytesMut;

use super::filter::{
    ConnectionEvent, ConnectionState, FilterStatus, ReadFilter, ReadFilterCallbacks, TakeOverFuture, WriteFilter,
};

struct ActiveReadFilter {
    filter: Box<dyn ReadFilter>,
    /// `on_new_connection` has been called.
    initialized: bool,
}

/// The filters of one connection, built fresh for it from its filter chain.
#[derive(Default)]
pub struct FilterManager {
    read_filters: Vec<ActiveReadFilter>,
    write_filters: Vec<Box<dyn WriteFilter>>,
}

impl FilterManager {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `read_filters` read filters: a connection's filters live as long as it does.
    pub fn with_capacity(read_filters: usize) -> Self {
        FilterManager { read_filters: Vec::with_capacity(read_filters), write_filters: Vec::new() }
    }

    /// Adds a read filter after those already added.
    pub fn add_read_filter(&mut self, filter: Box<dyn ReadFilter>) {
        self.read_filters.push(ActiveReadFilter { filter, initialized: false });
    }

    /// Adds a write filter; write filters run in reverse order of addition.
    pub fn add_write_filter(&mut self, filter: Box<dyn WriteFilter>) {
        self.write_filters.push(filter);
    }

    pub fn is_empty(&self) -> bool {
        self.read_filters.is_empty()
    }

    /// No filter of either kind: nothing to keep.
    pub fn holds_nothing(&self) -> bool {
        self.read_filters.is_empty() && self.write_filters.is_empty()
    }

    /// Gives every filter `on_new_connection`, in order, until one stops the chain.
    pub fn initialize_read_filters(&mut self, buffer: &mut BytesMut, state: &mut ConnectionState) {
        self.continue_reading_from(0, buffer, false, state);
    }

    /// New bytes (or end of stream) from the socket: the chain starts from the first filter.
    pub fn on_read(&mut self, buffer: &mut BytesMut, end_stream: bool, state: &mut ConnectionState) {
        self.continue_reading_from(0, buffer, end_stream, state);
    }

    /// Runs the chain from filter `start`: filters never initialized get `on_new_connection`,
    /// then `on_data` is called while there are bytes or an end of stream to deliver.
    pub fn continue_reading_from(
        &mut self,
        start: usize,
        buffer: &mut BytesMut,
        end_stream: bool,
        state: &mut ConnectionState,
    ) {
        for (index, entry) in self.read_filters.iter_mut().enumerate().skip(start) {
            let mut cb = ReadFilterCallbacks { state: &mut *state, filter_index: index };
            if !entry.initialized {
                entry.initialized = true;
                if entry.filter.on_new_connection(&mut cb) == FilterStatus::StopIteration {
                    return;
                }
            }
            if (!buffer.is_empty() || end_stream)
                && entry.filter.on_data(buffer, end_stream, &mut cb) == FilterStatus::StopIteration
            {
                return;
            }
        }
    }

    /// Passes bytes on their way to the downstream through the write filters, last added
    /// first. `None` when a filter stopped them.
    pub fn on_write(&mut self, mut data: BytesMut, end_stream: bool) -> Option<(BytesMut, bool)> {
        for filter in self.write_filters.iter_mut().rev() {
            if filter.on_write(&mut data, end_stream) == FilterStatus::StopIteration {
                return None;
            }
        }
        Some((data, end_stream))
    }

    /// Lets initialized filters drive their own I/O.
    pub fn poll_io(&mut self, cx: &mut Context<'_>, state: &mut ConnectionState) {
        for (index, entry) in self.read_filters.iter_mut().enumerate() {
            if entry.initialized {
                let mut cb = ReadFilterCallbacks { state: &mut *state, filter_index: index };
                entry.filter.poll_io(cx, &mut cb);
            }
        }
    }

    /// Gives the socket to the filter at `index` (it asked with `take_over_io`).
    pub fn take_over(
        &mut self,
        index: usize,
        socket: super::TransportSocket,
        buffered: BytesMut,
        info: super::ConnectionInfo,
    ) -> TakeOverFuture {
        let future = match self.read_filters.get_mut(index) {
            Some(active) => active.filter.take_over(socket, buffered, info),
            None => Box::pin(std::future::ready(super::TakenOverEnd::Closed(ConnectionEvent::LocalClose))),
        };
        // From here the filters only hear `on_event`. Small blocks made at accept and kept
        // for the connection's life would stay scattered among the freed remains of its
        // requests, holding the heap's pages (an idle connection's memory).
        self.read_filters.retain(|active| active.initialized && active.filter.needs_events_after_take_over());
        if self.read_filters.is_empty() {
            self.read_filters = Vec::new();
        }
        future
    }

    pub fn on_event(&mut self, event: ConnectionEvent) {
        for entry in self.read_filters.iter_mut().filter(|e| e.initialized) {
            entry.filter.on_event(event);
        }
    }

    /// Carries out what filters asked for through their callbacks that involves the chain
    /// itself: injected data and `continue_reading`. Returns whether anything ran.
    pub fn run_requests(&mut self, buffer: &mut BytesMut, end_stream: bool, state: &mut ConnectionState) -> bool {
        let mut ran = false;
        loop {
            if !state.injected.is_empty() {
                let injected = std::mem::take(&mut state.injected);
                for (start, mut data, inject_end) in injected {
                    self.continue_reading_from(start, &mut data, inject_end, state);
                }
                ran = true;
                continue;
            }
            if let Some(start) = state.resume_from.take() {
                self.continue_reading_from(start, buffer, end_stream, state);
                ran = true;
                continue;
            }
            return ran;
        }
    }

    /// Moves writes requested by filters through the write filters into the socket buffer.
    pub fn flush_pending_writes(&mut self, state: &mut ConnectionState) {
        if state.pending_writes.is_empty() {
            return;
        }
        for (data, end_stream) in std::mem::take(&mut state.pending_writes) {
            if state.write_end_stream {
                // Writing after our own half-close: nothing can carry these bytes.
                continue;
            }
            if let Some((data, end_stream)) = self.on_write(data, end_stream) {
                if state.write_buffer.is_empty() {
                    state.write_buffer = data;
                } else {
                    state.write_buffer.extend_from_slice(&data);
                }
                state.write_end_stream |= end_stream;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The shared-buffer semantics of Envoy's network filter chain.
    use super::*;
    use crate::network::filter::{ConnectionInfo, ConnectionState};
    use std::cell::RefCell;
    use std::rc::Rc;

    fn state() -> ConnectionState {
        let addr = "127.0.0.1:1".parse().unwrap();
        ConnectionState::new(
            ConnectionInfo { id: 1, remote_address: addr, local_address: addr, worker: 0, ssl: None, drain: None },
            1 << 20,
        )
    }

    type Log = Rc<RefCell<Vec<String>>>;

    /// Records what it sees; drains `drain` bytes; returns `status`.
    struct Recorder {
        name: &'static str,
        log: Log,
        drain: usize,
        new_connection: FilterStatus,
        status: FilterStatus,
        prepend: Option<&'static [u8]>,
    }

    impl Recorder {
        fn new(name: &'static str, log: &Log) -> Self {
            Recorder {
                name,
                log: log.clone(),
                drain: 0,
                new_connection: FilterStatus::Continue,
                status: FilterStatus::Continue,
                prepend: None,
            }
        }
    }

    impl ReadFilter for Recorder {
        fn on_new_connection(&mut self, _cb: &mut ReadFilterCallbacks<'_>) -> FilterStatus {
            self.log.borrow_mut().push(format!("{}:new", self.name));
            self.new_connection
        }

        fn on_data(
            &mut self,
            data: &mut BytesMut,
            end_stream: bool,
            _cb: &mut ReadFilterCallbacks<'_>,
        ) -> FilterStatus {
            self.log.borrow_mut().push(format!(
                "{}:{}{}",
                self.name,
                String::from_utf8_lossy(data),
                if end_stream { ":end" } else { "" }
            ));
            if let Some(prefix) = self.prepend {
                let mut with = BytesMut::from(prefix);
                with.extend_from_slice(data);
                *data = with;
            }
            let n = self.drain.min(data.len());
            let _ = data.split_to(n);
            self.status
        }
    }

    #[test]
    fn undrained_bytes_are_read_again_by_the_next_filter() {
        let log = Log::default();
        let mut fm = FilterManager::new();
        fm.add_read_filter(Box::new(Recorder::new("a", &log)));
        let mut b = Recorder::new("b", &log);
        b.drain = 2;
        fm.add_read_filter(Box::new(b));
        fm.add_read_filter(Box::new(Recorder::new("c", &log)));
        let mut st = state();
        let mut buf = BytesMut::new();
        fm.initialize_read_filters(&mut buf, &mut st);
        buf.extend_from_slice(b"hello");
        fm.on_read(&mut buf, false, &mut st);
        assert_eq!(*log.borrow(), ["a:new", "b:new", "c:new", "a:hello", "b:hello", "c:llo"]);
        assert_eq!(&buf[..], b"llo", "what no filter drained stays in the shared buffer");
    }

    #[test]
    fn a_filter_can_insert_bytes() {
        let log = Log::default();
        let mut fm = FilterManager::new();
        let mut a = Recorder::new("a", &log);
        a.prepend = Some(b"PROXY ");
        fm.add_read_filter(Box::new(a));
        fm.add_read_filter(Box::new(Recorder::new("b", &log)));
        let mut st = state();
        let mut buf = BytesMut::from(&b"data"[..]);
        fm.initialize_read_filters(&mut BytesMut::new(), &mut st);
        fm.on_read(&mut buf, false, &mut st);
        assert_eq!(log.borrow().last().unwrap(), "b:PROXY data");
    }

    /// Stops on new connection until told to continue; then resumes the chain after itself.
    struct Gate {
        log: Log,
        open: Rc<RefCell<bool>>,
    }

    impl ReadFilter for Gate {
        fn on_new_connection(&mut self, _cb: &mut ReadFilterCallbacks<'_>) -> FilterStatus {
            self.log.borrow_mut().push("gate:new".into());
            FilterStatus::StopIteration
        }
        fn on_data(&mut self, _d: &mut BytesMut, _e: bool, _cb: &mut ReadFilterCallbacks<'_>) -> FilterStatus {
            self.log.borrow_mut().push("gate:data".into());
            if *self.open.borrow() {
                FilterStatus::Continue
            } else {
                FilterStatus::StopIteration
            }
        }
        fn poll_io(&mut self, _cx: &mut Context<'_>, cb: &mut ReadFilterCallbacks<'_>) {
            let mut open = self.open.borrow_mut();
            if *open {
                return;
            }
            *open = true;
            cb.continue_reading();
        }
    }

    #[test]
    fn a_stopped_chain_resumes_with_continue_reading() {
        let log = Log::default();
        let open = Rc::new(RefCell::new(false));
        let mut fm = FilterManager::new();
        fm.add_read_filter(Box::new(Gate { log: log.clone(), open: open.clone() }));
        fm.add_read_filter(Box::new(Recorder::new("b", &log)));
        let mut st = state();
        let mut buf = BytesMut::new();
        fm.initialize_read_filters(&mut buf, &mut st);
        buf.extend_from_slice(b"early");
        fm.on_read(&mut buf, false, &mut st);
        assert_eq!(*log.borrow(), ["gate:new", "gate:data"], "b is not initialized while the gate is shut");
        let waker = std::task::Waker::noop();
        fm.poll_io(&mut Context::from_waker(waker), &mut st);
        assert!(fm.run_requests(&mut buf, false, &mut st));
        assert_eq!(
            *log.borrow(),
            ["gate:new", "gate:data", "b:new", "b:early"],
            "resumes after the gate with the buffered bytes"
        );
    }

    struct Upper;
    impl WriteFilter for Upper {
        fn on_write(&mut self, data: &mut BytesMut, _end: bool) -> FilterStatus {
            data.make_ascii_uppercase();
            FilterStatus::Continue
        }
    }
    struct Suffix;
    impl WriteFilter for Suffix {
        fn on_write(&mut self, data: &mut BytesMut, _end: bool) -> FilterStatus {
            data.extend_from_slice(b"!");
            FilterStatus::Continue
        }
    }

    #[test]
    fn write_filters_run_in_reverse_order_and_injection_skips_earlier_filters() {
        let log = Log::default();
        let mut fm = FilterManager::new();
        fm.add_write_filter(Box::new(Suffix));
        fm.add_write_filter(Box::new(Upper));
        // Upper runs first (added last), then Suffix: "hi" -> "HI" -> "HI!".
        let (out, _) = fm.on_write(BytesMut::from(&b"hi"[..]), false).unwrap();
        assert_eq!(&out[..], b"HI!");

        fm.add_read_filter(Box::new(Recorder::new("a", &log)));
        fm.add_read_filter(Box::new(Recorder::new("b", &log)));
        let mut st = state();
        fm.initialize_read_filters(&mut BytesMut::new(), &mut st);
        {
            let mut cb = ReadFilterCallbacks { state: &mut st, filter_index: 0 };
            cb.inject_read_data(BytesMut::from(&b"inj"[..]), false);
        }
        fm.run_requests(&mut BytesMut::new(), false, &mut st);
        assert_eq!(log.borrow().last().unwrap(), "b:inj");
        assert!(!log.borrow().iter().any(|l| l == "a:inj"), "injected data goes to the filters after the injector");
    }

    /// Takes the connection over; records its drop and any event it hears.
    struct Taker {
        log: Log,
    }

    impl ReadFilter for Taker {
        fn on_new_connection(&mut self, cb: &mut ReadFilterCallbacks<'_>) -> FilterStatus {
            cb.take_over_io();
            FilterStatus::StopIteration
        }

        fn on_data(&mut self, _d: &mut BytesMut, _e: bool, _cb: &mut ReadFilterCallbacks<'_>) -> FilterStatus {
            FilterStatus::StopIteration
        }

        fn on_event(&mut self, _event: ConnectionEvent) {
            self.log.borrow_mut().push("taker:event".into());
        }

        fn needs_events_after_take_over(&self) -> bool {
            false
        }
    }

    impl Drop for Taker {
        fn drop(&mut self) {
            self.log.borrow_mut().push("taker:dropped".into());
        }
    }

    struct EventRecorder(Log);

    impl ReadFilter for EventRecorder {
        fn on_data(&mut self, _d: &mut BytesMut, _e: bool, _cb: &mut ReadFilterCallbacks<'_>) -> FilterStatus {
            FilterStatus::Continue
        }

        fn on_event(&mut self, event: ConnectionEvent) {
            self.0.borrow_mut().push(format!("recorder:{event:?}"));
        }
    }

    #[test]
    fn after_a_take_over_only_filters_that_need_events_are_kept() {
        let log = Log::default();
        let mut fm = FilterManager::new();
        fm.add_read_filter(Box::new(EventRecorder(log.clone())));
        fm.add_read_filter(Box::new(Taker { log: log.clone() }));
        let mut st = state();
        fm.initialize_read_filters(&mut BytesMut::new(), &mut st);
        assert_eq!(st.take_over, Some(1));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let socket = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            let socket = crate::network::TransportSocket::RawBuffer(socket);
            let _future = fm.take_over(1, socket, BytesMut::new(), state().info);
        });
        assert_eq!(*log.borrow(), ["taker:dropped"], "the taker is dropped at the take-over");
        fm.on_event(ConnectionEvent::RemoteClose);
        assert_eq!(*log.borrow(), ["taker:dropped", "recorder:RemoteClose"]);
    }
}
