//! Where a worker keeps its idle connections: without a task, a future, a timer or an event
//! loop registration each. An idle HTTP/1.1 keep-alive connection is then a few hundred
//! bytes (nginx keeps little more than a connection struct for one), where a parked task with
//! its futures, timer and tokio registration took ~2 KiB.
//!
//! One epoll instance of the park's own (mio's `Poll`, itself watched by the worker's event
//! loop) watches the parked sockets; one timer serves the earliest `wake_at`; one place in the
//! worker's drain table hears drains. Whatever happens, the connection is handed back to what
//! parked it ([`ParkedConnection::wake`]), which resumes it in a task, parks it again or closes.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Token};
use tokio::io::unix::AsyncFd;

use crate::listener::active_listener::ParkedConnection;
use crate::listener::drain::{DrainWaiter, WorkerDrains};
use crate::worker::clock::Stamp;

/// Events taken per call to the park's `epoll_wait`.
const EVENTS_PER_POLL: usize = 256;

/// Entries per segment of the park's table. The table grows a segment at a time and entries
/// never move: parked connections sit side by side in a few large blocks, with at most one
/// segment's worth of room to spare, rather than each in a small block of its own among the
/// freed remains of the requests it served (which is what fragments the heap).
const SEGMENT: usize = 128;

/// A worker's parked connections.
#[derive(Default)]
pub struct Park {
    /// Adds to and removes from the park's epoll set (made with the first parked
    /// connection; the set itself belongs to the park's task).
    registry: RefCell<Option<Rc<mio::Registry>>>,
    /// Segments of `SEGMENT` entries; entry `i` is at `i / SEGMENT`, `i % SEGMENT`.
    entries: RefCell<Vec<Vec<Entry>>>,
    /// The first free entry (free entries link to the next).
    free: Cell<Option<usize>>,
    parked: Cell<usize>,
    /// The earliest `wake_at` of the parked connections (or earlier: it is not moved when
    /// that connection leaves; the timer then finds nothing due and looks again).
    next_wake: Cell<Option<Instant>>,
    /// Wakes the park's task when `next_wake` moved earlier.
    task_waker: RefCell<Option<std::task::Waker>>,
}

#[allow(clippy::large_enum_variant)] // on purpose: connections side by side, see `SEGMENT`
enum Entry {
    Taken { socket: std::net::TcpStream, wake_at: Option<Stamp>, connection: ParkedConnection },
    Free(Option<usize>),
}

fn entry_mut(segments: &mut [Vec<Entry>], index: usize) -> Option<&mut Entry> {
    segments.get_mut(index / SEGMENT)?.get_mut(index % SEGMENT)
}

/// Adds a free entry at the end of the table; its index.
fn push_free(segments: &mut Vec<Vec<Entry>>) -> usize {
    if segments.last().is_none_or(|last| last.len() == SEGMENT) {
        segments.push(Vec::with_capacity(SEGMENT));
    }
    let full = segments.len() - 1;
    let last = segments.last_mut().map_or(0, |last| {
        last.push(Entry::Free(None));
        last.len() - 1
    });
    full * SEGMENT + last
}

impl Park {
    /// Puts `connection` aside until its socket has bytes (or closes), `wake_at` comes or a
    /// drain is announced. When the park's epoll instance cannot be made or cannot watch the
    /// socket (the system's limits), the connection is closed instead.
    pub fn insert(
        self: &Rc<Self>,
        drains: &Rc<WorkerDrains>,
        socket: std::net::TcpStream,
        wake_at: Option<Instant>,
        connection: ParkedConnection,
    ) {
        let Some(registry) = self.registry_or_start(drains) else { return connection.close_unwatched() };
        let index = {
            let mut entries = self.entries.borrow_mut();
            let free = self.free.get().filter(|&i| matches!(entry_mut(&mut entries, i), Some(Entry::Free(_))));
            match free {
                Some(index) => {
                    if let Some(Entry::Free(next)) = entry_mut(&mut entries, index) {
                        self.free.set(*next);
                    }
                    index
                }
                None => push_free(&mut entries),
            }
        };
        let fd = socket.as_raw_fd();
        if registry.register(&mut SourceFd(&fd), Token(index), Interest::READABLE).is_err() {
            self.release(index);
            return connection.close_unwatched();
        }
        if let Some(entry) = entry_mut(&mut self.entries.borrow_mut(), index) {
            *entry = Entry::Taken { socket, wake_at: wake_at.map(Stamp::of), connection };
        }
        self.parked.set(self.parked.get() + 1);
        if let Some(at) = wake_at {
            if self.next_wake.get().is_none_or(|next| at < next) {
                self.next_wake.set(Some(at));
                if let Some(waker) = self.task_waker.borrow_mut().take() {
                    waker.wake();
                }
            }
        }
    }

    /// Closes every parked connection (the worker stops; a parked connection holds its
    /// worker's context, which holds the park).
    pub fn clear(&self) {
        let entries = std::mem::take(&mut *self.entries.borrow_mut());
        self.free.set(None);
        self.parked.set(0);
        drop(entries);
    }

    fn registry_or_start(self: &Rc<Self>, drains: &Rc<WorkerDrains>) -> Option<Rc<mio::Registry>> {
        if let Some(registry) = self.registry.borrow().as_ref() {
            return Some(registry.clone());
        }
        let poll = mio::Poll::new().ok()?;
        let registry = Rc::new(poll.registry().try_clone().ok()?);
        // `AsyncFd::register` states its condition as `unsafe` (this crate has none): the
        // descriptor must stay open and the same while registered. `mio::Poll` owns its
        // epoll descriptor for its whole life and gives the same one each time, so the
        // older, safe constructor is sound here.
        #[allow(deprecated)]
        let poll = AsyncFd::new(poll).ok()?;
        *self.registry.borrow_mut() = Some(registry.clone());
        tokio::task::spawn_local(run(self.clone(), poll, drains.clone()));
        Some(registry)
    }

    fn release(&self, index: usize) {
        if let Some(entry) = entry_mut(&mut self.entries.borrow_mut(), index) {
            *entry = Entry::Free(self.free.get());
            self.free.set(Some(index));
        }
    }

    /// Takes the connection at `index` out of the park (and its socket out of the epoll set).
    fn take(&self, index: usize) -> Option<(std::net::TcpStream, ParkedConnection)> {
        let taken = {
            let mut entries = self.entries.borrow_mut();
            let entry = entry_mut(&mut entries, index)?;
            if !matches!(entry, Entry::Taken { .. }) {
                return None;
            }
            std::mem::replace(entry, Entry::Free(self.free.get()))
        };
        let Entry::Taken { socket, connection, .. } = taken else { return None };
        self.free.set(Some(index));
        self.parked.set(self.parked.get().saturating_sub(1));
        if let Some(registry) = self.registry.borrow().as_ref() {
            let _ = registry.deregister(&mut SourceFd(&socket.as_raw_fd()));
        }
        if self.parked.get() == 0 {
            // All gone: give the table's memory back.
            *self.entries.borrow_mut() = Vec::new();
            self.free.set(None);
        }
        Some((socket, connection))
    }

    /// Hands each connection at `indices` back to what parked it; those that park again
    /// come back in.
    fn wake(self: &Rc<Self>, drains: &Rc<WorkerDrains>, indices: &[usize]) {
        for &index in indices {
            let Some((socket, connection)) = self.take(index) else { continue };
            if let Some((socket, wake_at, connection)) = connection.wake(socket) {
                self.insert(drains, socket, wake_at, connection);
            }
        }
    }

    /// Entries whose `wake_at` has come, and the next `wake_at` after them.
    fn due(&self, now: Instant) -> (Vec<usize>, Option<Instant>) {
        let now = Stamp::of(now);
        let mut due = Vec::new();
        let mut next: Option<Stamp> = None;
        for (index, entry) in self.entries.borrow().iter().flatten().enumerate() {
            if let Entry::Taken { wake_at: Some(at), .. } = entry {
                if *at <= now {
                    due.push(index);
                } else if next.is_none_or(|n| *at < n) {
                    next = Some(*at);
                }
            }
        }
        (due, next.map(Stamp::instant))
    }

    fn taken(&self) -> Vec<usize> {
        let entries = self.entries.borrow();
        entries.iter().flatten().enumerate().filter(|(_, e)| matches!(e, Entry::Taken { .. })).map(|(i, _)| i).collect()
    }
}

/// The park's task: as long as the worker runs.
async fn run(park: Rc<Park>, mut poll: AsyncFd<mio::Poll>, drains: Rc<WorkerDrains>) {
    enum Wake {
        Sockets(Vec<usize>),
        Timer,
        Drain,
    }
    let mut drain = DrainWaiter::new(&drains);
    let mut events = Events::with_capacity(EVENTS_PER_POLL);
    let mut timer = Box::pin(tokio::time::sleep(Duration::from_secs(3600)));
    let mut armed: Option<Instant> = None;
    loop {
        let wake = std::future::poll_fn(|cx: &mut Context<'_>| {
            *park.task_waker.borrow_mut() = Some(cx.waker().clone());
            while let Poll::Ready(guard) = poll.poll_read_ready_mut(cx) {
                let Ok(mut guard) = guard else { break };
                match guard.get_inner_mut().poll(&mut events, Some(Duration::ZERO)) {
                    Ok(()) if !events.is_empty() => {
                        // A full batch may leave more behind, which would not signal again.
                        if events.iter().count() < EVENTS_PER_POLL {
                            guard.clear_ready();
                        }
                        return Poll::Ready(Wake::Sockets(events.iter().map(|e| e.token().0).collect()));
                    }
                    Ok(()) => guard.clear_ready(),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "parked connections: epoll_wait failed");
                        guard.clear_ready();
                    }
                }
            }
            if drain.poll_announced(cx).is_ready() {
                return Poll::Ready(Wake::Drain);
            }
            let next = park.next_wake.get();
            if next != armed {
                armed = next;
                timer.as_mut().reset(next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)).into());
            }
            if armed.is_some() && timer.as_mut().poll(cx).is_ready() {
                armed = None;
                return Poll::Ready(Wake::Timer);
            }
            Poll::Pending
        })
        .await;
        match wake {
            Wake::Sockets(ready) => park.wake(&drains, &ready),
            Wake::Timer => {
                let (due, next) = park.due(Instant::now());
                park.next_wake.set(next);
                park.wake(&drains, &due);
            }
            // Every connection checks what drains (the server, its filter chain).
            Wake::Drain => park.wake(&drains, &park.taken()),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_parked_connection_takes_under_a_quarter_kilobyte() {
        // An idle keep-alive connection's memory is mostly its entry (224 bytes when this was
        // written; nginx holds ~0.5 KiB per idle connection in all, see bench/README.md).
        assert!(std::mem::size_of::<super::Entry>() <= 256, "{}", std::mem::size_of::<super::Entry>());
    }
}
