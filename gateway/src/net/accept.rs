use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinSet;

use super::{Listener, ShutdownSignal};

/// Accepts connections until shutdown and runs `handle` for each on its own task; then waits
/// up to the shutdown's grace period for open connections to finish and drops the rest. Dropping loses nothing:
/// protocols acknowledge only what is durable.
pub async fn serve_connections<L, F, Fut>(mut listener: L, mut shutdown: ShutdownSignal, handle: F)
where
    L: Listener,
    F: Fn(L::Stream, SocketAddr, ShutdownSignal) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(handle(stream, peer, shutdown.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.triggered() => break,
        }
    }
    drop(listener);
    let grace = shutdown.grace();
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            "closing connections that did not finish in time"
        );
        connections.shutdown().await;
    }
}
