//! `dcnode`: the reference DC storage node, and the node-side SDK other node implementations
//! can reuse.
//!
//! - [`keystore`]: the node's keyring sealed to its own MRENCLAVE, one file per enclave
//!   identity, never deleted — so an older version rolled back to still finds its own blob.
//! - [`startup`]: where a starting node's keys come from (pure decision).
//! - [`store`]: objects encrypted at rest with generations of the keyring's data key.
//! - [`custody`]: the custody state that travels with the keyring (floor, release stamp,
//!   revocations) and the data-key generation each upgrade mints.
//! - [`api`]: the data API and the status endpoints.
//! - [`metrics`]: the Prometheus metrics served at `/metrics` on the data port.

pub mod api;
pub mod custody;
pub mod keystore;
pub mod metrics;
pub mod startup;
pub mod store;

/// Names of the keys in a node keyring.
pub const KEY_DATA: &str = "data";
pub const KEY_IDENTITY: &str = "node-identity";
/// Response header naming the node version that served a request.
pub const VERSION_HEADER: &str = "x-dcnode-version";

/// The keyring a node derives from `--test-key-seed` (tests only): each key is
/// SHA-256(`"dcnode test key\0"` ‖ seed ‖ name). Never used without that measured argument.
pub fn test_keyring(
    seed_hex: &str,
) -> Result<dc_handover::Keyring, dc_handover::keyring::KeyringError> {
    use sha2::{Digest, Sha256};
    let keys = [KEY_DATA, KEY_IDENTITY]
        .iter()
        .map(|name| {
            let mut h = Sha256::new();
            h.update(b"dcnode test key\0");
            h.update(seed_hex.as_bytes());
            h.update(name.as_bytes());
            (
                name.to_string(),
                1,
                zeroize::Zeroizing::new(h.finalize().to_vec()),
            )
        })
        .collect();
    dc_handover::Keyring::new(1, keys)
}
