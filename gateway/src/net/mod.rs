//! The one module that touches real sockets. Protocol shells are generic over [`Listener`]
//! and its stream type, so the simulation swaps exactly this module's TCP types for turmoil's.

mod limits;
mod listener;
mod shutdown;
mod stream;

pub use limits::{ConnectionLimits, ConnectionPermit, LimitExceeded};
pub use listener::Listener;
pub use shutdown::{Shutdown, ShutdownSignal};
pub use stream::MaybeTls;
