//! Closing a refused connection, at once or after a delay with reading stopped (to slow down
//! clients that reconnect at once): `connection_limit`'s `delay`, RBAC's `delay_deny`.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use super::{ConnectionCloseType, ReadFilterCallbacks};

#[derive(Default)]
pub struct DelayedClose {
    delay: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl DelayedClose {
    /// Closes the connection now, or stops reading and closes it after `delay`.
    pub fn close(&mut self, delay: Option<Duration>, cb: &mut ReadFilterCallbacks<'_>) {
        match delay {
            Some(delay) => {
                cb.read_disable(true);
                self.delay = Some(Box::pin(tokio::time::sleep(delay)));
            }
            None => cb.close(ConnectionCloseType::NoFlush),
        }
    }

    /// Waiting to close: nothing more of the connection goes on.
    pub fn pending(&self) -> bool {
        self.delay.is_some()
    }

    /// Closes once the delay is over.
    pub fn poll(&mut self, cx: &mut Context<'_>, cb: &mut ReadFilterCallbacks<'_>) {
        if let Some(delay) = &mut self.delay {
            if delay.as_mut().poll(cx).is_ready() {
                self.delay = None;
                cb.close(ConnectionCloseType::NoFlush);
            }
        }
    }
}
