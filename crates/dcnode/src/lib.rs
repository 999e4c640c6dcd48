//! `dcnode`: the reference DC storage node, and the node-side SDK other node implementations
//! can reuse.
//!
//! - [`keystore`]: the node's keyring sealed to its own MRENCLAVE, one file per enclave
//!   identity, never deleted — so an older version rolled back to still finds its own blob.
//! - [`startup`]: where a starting node's keys come from (pure decision).
//! - [`store`]: objects encrypted at rest with the keyring's data key.
//! - [`api`]: the data API and the status endpoints.

pub mod api;
pub mod keystore;
pub mod startup;
pub mod store;

/// Names of the keys in a node keyring.
pub const KEY_DATA: &str = "data";
pub const KEY_IDENTITY: &str = "node-identity";
/// Response header naming the node version that served a request.
pub const VERSION_HEADER: &str = "x-dcnode-version";
