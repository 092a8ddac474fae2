//! Draining the connections of a filter chain that an update replaced or removed (Envoy's
//! listener `DrainManager`): first they are asked to finish (HTTP/1.1 answers with
//! `connection: close`, HTTP/2 sends GOAWAY, idle connections close), then, when the drain
//! time is over, whatever is still open is closed. Chains an update left unchanged are not
//! drained: their connections never hear of it.

use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DrainPhase {
    Serving,
    Draining,
    Closed,
}

/// Owned by the filter chain; connections hold receivers.
pub struct FilterChainDrain {
    phase: watch::Sender<DrainPhase>,
}

impl Default for FilterChainDrain {
    fn default() -> Self {
        FilterChainDrain { phase: watch::Sender::new(DrainPhase::Serving) }
    }
}

impl FilterChainDrain {
    pub fn subscribe(&self) -> watch::Receiver<DrainPhase> {
        self.phase.subscribe()
    }

    /// Moves to `phase` (never backwards).
    pub fn advance(&self, phase: DrainPhase) {
        self.phase.send_if_modified(|current| {
            let later = phase > *current;
            if later {
                *current = phase;
            }
            later
        });
    }
}

/// Resolves once the chain reaches `phase`; never when there is no chain to drain.
pub async fn reached(drain: Option<&mut watch::Receiver<DrainPhase>>, phase: DrainPhase) {
    match drain {
        Some(rx) => {
            if rx.wait_for(|p| *p >= phase).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}
