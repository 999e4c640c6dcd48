//! Who may take part in a handover, and at which version.

use std::collections::HashMap;
use std::fmt;

use dc_tee::{EnclaveIdentity, Measurement};

/// A release version: `MAJOR.MINOR.PATCH`, compared numerically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl Version {
    pub const fn new(major: u64, minor: u64, patch: u64) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }
}

impl std::str::FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("version {s:?} is not MAJOR.MINOR.PATCH (e.g. 0.2.1)");
        let mut it = s.split('.');
        let mut next = || -> Result<u64, String> {
            let p = it.next().ok_or_else(bad)?;
            if p.is_empty()
                || p.len() > 19
                || !p.bytes().all(|c| c.is_ascii_digit())
                || (p.len() > 1 && p.starts_with('0'))
            {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let v = Version::new(next()?, next()?, next()?);
        if it.next().is_some() {
            return Err(bad());
        }
        Ok(v)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What an authorized enclave is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerRole {
    /// A DC node release of the given version.
    Node(Version),
    /// The upgrade agent, which holds keys only in transit between node versions and applies
    /// the version rule itself.
    Upgrader,
}

/// A node release the keys may go to, as committee-signed evidence names it: the holder
/// checks it before releasing keys to the upgrade agent, and it travels with the keys
/// ([`crate::keyring::Custody::released_to`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Destination {
    pub mr_enclave: Measurement,
    pub version: Version,
    pub isv_svn: u16,
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (version {}, ISVSVN {})",
            self.mr_enclave, self.version, self.isv_svn
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    #[error(
        "enclave {0} is not authorized (not in the allow-list / no valid committee signature)"
    )]
    NotAuthorized(Measurement),
    #[error("enclave {0} has been revoked")]
    Revoked(Measurement),
    #[error("this holder does not release keys to an upgrader: it has no destination policy")]
    NoDestinationPolicy,
    #[error("the destination release is not authorized: {0}")]
    BadDestination(String),
    #[error("authorization evidence for {mr_enclave} is invalid: {reason}")]
    BadEvidence {
        mr_enclave: Measurement,
        reason: String,
    },
}

/// Decides whether a peer's attested identity may take part in a handover.
///
/// Implementations must rely only on measured trust roots (compiled in or from the enclave's
/// own measured manifest) and the attested identity; `evidence` is supplied by the peer and
/// is bound into the attested transcript, so it can carry e.g. committee signatures over the
/// peer's EnclaveID.
pub trait Authorizer: Send + Sync {
    fn authorize(&self, peer: &EnclaveIdentity, evidence: &[u8]) -> Result<PeerRole, AuthzError>;

    /// Checks the evidence an upgrader presents for the node release it collects keys for
    /// (bound into T2, like `evidence`). Only holders that release keys to an upgrader need
    /// it; by default every destination is refused.
    fn authorize_destination(&self, evidence: &[u8]) -> Result<Destination, AuthzError> {
        let _ = evidence;
        Err(AuthzError::NoDestinationPolicy)
    }
}

/// A fixed allow-list of MRENCLAVEs (from the enclave's measured trust roots).
#[derive(Clone, Debug, Default)]
pub struct StaticAllowList {
    entries: HashMap<Measurement, PeerRole>,
    destinations: HashMap<Vec<u8>, Destination>,
}

impl StaticAllowList {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn allow(mut self, mr_enclave: Measurement, role: PeerRole) -> Self {
        self.entries.insert(mr_enclave, role);
        self
    }

    /// Accepts exactly `evidence` as naming the destination `d` (tests and fixed setups).
    pub fn allow_destination(mut self, evidence: &[u8], d: Destination) -> Self {
        self.destinations.insert(evidence.to_vec(), d);
        self
    }
}

impl Authorizer for StaticAllowList {
    fn authorize(&self, peer: &EnclaveIdentity, _evidence: &[u8]) -> Result<PeerRole, AuthzError> {
        self.entries
            .get(&peer.mr_enclave)
            .copied()
            .ok_or(AuthzError::NotAuthorized(peer.mr_enclave))
    }

    fn authorize_destination(&self, evidence: &[u8]) -> Result<Destination, AuthzError> {
        self.destinations
            .get(evidence)
            .copied()
            .ok_or_else(|| AuthzError::BadDestination("not in the allow-list".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order_numerically() {
        let v: Version = "0.10.2".parse().unwrap();
        assert!(v > "0.9.99".parse().unwrap());
        assert_eq!(v.to_string(), "0.10.2");
        for bad in [
            "",
            "1",
            "1.2",
            "1.2.3.4",
            "1.a.3",
            "01.2.3",
            "1.2.-3",
            " 1.2.3",
            "99999999999999999999.0.0",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?}");
        }
    }
}
