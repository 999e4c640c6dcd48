//! `dc-release`: what the DC release committee signs, and how enclaves check it.
//!
//! - [`record`]: release records (which enclave identity is which version of which product,
//!   and where its artifact is), their canonical signing bytes, committee signatures.
//! - [`committee`]: committee keys (multibase base32, as DC's tools write them) and M-of-N
//!   verification; duplicate signatures by one key count once.
//! - [`authorizer`]: the handover [`dc_handover::Authorizer`] backed by committee-signed
//!   records presented by the peer as evidence.
//! - [`feed`]: the local release feed (a directory of signed records).
//!
//! No network code here.

pub mod authorizer;
pub mod committee;
pub mod evidence;
pub mod feed;
pub mod legacy;
pub mod multibase;
pub mod record;
pub mod revocation;

pub use authorizer::CommitteeAuthorizer;
pub use committee::{Committee, CommitteeKey};
pub use evidence::{ReleaseEvidence, VerifiedRelease};
pub use record::{Artifact, ReleaseRecord, Role, SignedRecord, VerifiedRecord};

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("invalid release record: {0}")]
    Invalid(String),
    #[error("not enough valid committee signatures: {valid} of the required {threshold}")]
    Threshold { valid: usize, threshold: usize },
    #[error("committee configuration: {0}")]
    Committee(String),
    #[error("key: {0}")]
    Key(String),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    // `now` is not in the message: a refusal is reported once per distinct message, and a
    // message that changed every second would be reported at every poll.
    #[error("release record expired at {expires_at} (Unix seconds; if that is still ahead, this machine's clock is wrong)")]
    Expired { expires_at: u64, now: u64 },
}

/// SHA-256 and size of an artifact file, streamed.
pub fn digest_file(path: &std::path::Path) -> Result<([u8; 32], u64), ReleaseError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let io = |source| ReleaseError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((h.finalize().into(), size))
}
