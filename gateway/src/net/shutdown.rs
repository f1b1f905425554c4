use std::time::Duration;

use tokio::sync::watch;

/// How long connections may take to finish after shutdown begins; then they are dropped.
/// Nothing is lost by that: a message is only acknowledged after its commit.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The owner's side of graceful shutdown: [`Shutdown::trigger`] tells every listener to stop
/// accepting and every session to finish its transaction and close.
#[derive(Debug)]
pub struct Shutdown {
    sender: watch::Sender<bool>,
    grace: Duration,
}

/// A session's or listener's side: cheap to clone, resolves once shutdown begins.
#[derive(Debug, Clone)]
pub struct ShutdownSignal {
    receiver: watch::Receiver<bool>,
    grace: Duration,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self::with_grace(DEFAULT_SHUTDOWN_GRACE)
    }

    /// Listeners wait up to `grace` for their connections after the trigger.
    pub fn with_grace(grace: Duration) -> Self {
        let (sender, _) = watch::channel(false);
        Self { sender, grace }
    }

    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            receiver: self.sender.subscribe(),
            grace: self.grace,
        }
    }

    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }
}

impl ShutdownSignal {
    /// How long a listener waits for its connections once shutdown begins.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    pub fn is_triggered(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Resolves when shutdown begins (at once if it already has, or if the owner is gone).
    pub async fn triggered(&mut self) {
        let _ = self.receiver.wait_for(|&on| on).await;
    }

    /// Runs `turn` every `period` (the first at once; a late turn delays the next instead
    /// of bunching them) until shutdown begins or a turn says to stop.
    pub async fn every<F>(mut self, period: Duration, mut turn: impl FnMut() -> F)
    where
        F: std::future::Future<Output = std::ops::ControlFlow<()>>,
    {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let turns = async {
            loop {
                ticks.tick().await;
                if turn().await.is_break() {
                    return;
                }
            }
        };
        tokio::select! {
            () = turns => {}
            () = self.triggered() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signals_resolve_after_trigger() {
        let shutdown = Shutdown::new();
        let mut signal = shutdown.signal();
        assert!(!signal.is_triggered());
        shutdown.trigger();
        signal.triggered().await;
        assert!(signal.is_triggered());
        assert!(
            shutdown.signal().is_triggered(),
            "late subscribers see it too"
        );
    }
}
