//! The one module that touches real sockets. Protocol shells are generic over [`Listener`]
//! and its stream type, so the simulation swaps exactly this module's TCP types for turmoil's.
//! Every protocol machine runs under the one [`Driver`].

mod accept;
mod admit;
pub mod driver;
mod limits;
mod listener;
mod open_files;
pub(crate) mod protocol_server;
mod session;
mod shutdown;
mod stream;
mod tls_active;

pub use accept::serve_connections;
pub use admit::{admit, HANDSHAKE_TIMEOUT};
pub use driver::{Driver, Interrupt, Machine, Next, Now, Outbox};
pub use limits::{
    ConnectionLimits, ConnectionPermit, ConnectionPolicy, LimitExceeded, DEFAULT_WRITE_TIMEOUT,
};
pub use listener::{Listener, SocketOptions, TcpListener};
pub use open_files::{descriptors_needed, raise_open_files_limit, OpenFiles};
pub use protocol_server::{Admitted, ProtocolServer};
pub use session::{session_id, session_span};
pub use shutdown::{Shutdown, ShutdownSignal, DEFAULT_SHUTDOWN_GRACE};
pub use stream::{linger, shutdown_within, write_all_within, MaybeTls, Switchable};
pub use tls_active::{describe_connection, TlsActive};

/// How a listener's connections start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain, with the protocol's upgrade command offered (SMTP 25/587 STARTTLS, POP3 110 STLS).
    StartTls,
    /// TLS from the first byte (SMTP 465, POP3 995; RFC 8314).
    Implicit,
}
