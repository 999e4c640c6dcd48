//! `dc-chain`: DCChain as a release source.
//!
//! - [`storage`]: the `DcNode` pallet's storage keys and values (`DcProgram`, `EnclaveIds`),
//!   decoded from SCALE with limits on every size.
//! - [`watcher`]: follows finalized blocks over Substrate JSON-RPC (WebSocket): subscribes to
//!   finalized heads, reads storage *at the finalized hash*, never acts while the node syncs,
//!   reconnects with backoff across several endpoints, and polls as a fallback for missed
//!   notifications. `wss://` endpoints use rustls with ring ([`tls`]), trusting the public
//!   web roots plus [`WatcherConfig::extra_roots_pem`]. It reports what it sees; the trust decisions (committee signatures) are
//!   made inside the enclave by `dc-release`, since the RPC node is trusted for availability
//!   only.

pub mod storage;
pub mod testnet;
pub mod tls;
pub mod watcher;

pub use storage::{DcProgramInfo, EnclaveIdEntry};
pub use watcher::{Event, Observation, WatcherConfig};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("RPC: {0}")]
    Rpc(String),
    #[error("storage value does not decode: {0}")]
    Decode(String),
    #[error("storage value is {got} bytes, over the {limit}-byte limit")]
    TooLarge { got: usize, limit: usize },
    #[error("the node is syncing; not acting on its data")]
    Syncing,
}
