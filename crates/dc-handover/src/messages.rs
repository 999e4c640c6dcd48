//! Wire messages. JSON objects, binary fields in standard base64 (RFC 4648 §4, with padding);
//! unknown fields are refused. The binary forms the transcript hashes cover are exactly the
//! decoded bytes.

use serde::{Deserialize, Serialize};

/// Largest authorization evidence a peer may send (e.g. committee signatures); also the
/// largest destination evidence.
pub const MAX_AUTHORIZATION: usize = 16 * 1024;
/// Largest HPKE ciphertext (a maximal keyring plus the tag).
pub const MAX_CIPHERTEXT: usize = crate::keyring::MAX_ENCODED_LEN + 16;

pub type SessionId = [u8; 16];

/// Receiver → holder: "I want the keys; make your challenge report for this target."
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    #[serde(with = "b64::fixed")]
    pub target_info: [u8; 512],
}

/// Holder → receiver: a fresh nonce with its deadline, in a report of the holder for the
/// receiver whose REPORTDATA is T1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Challenge {
    #[serde(with = "b64::fixed")]
    pub session: SessionId,
    #[serde(with = "b64::fixed")]
    pub nonce: [u8; 32],
    pub expires_at_ms: u64,
    #[serde(with = "b64::fixed")]
    pub holder_report: [u8; 432],
    #[serde(with = "b64::var")]
    pub holder_authorization: Vec<u8>,
}

/// Receiver → holder: the receiver's report for the holder (REPORTDATA = T2), binding its
/// ephemeral HPKE public key and its authorization evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    #[serde(with = "b64::fixed")]
    pub session: SessionId,
    #[serde(with = "b64::fixed")]
    pub receiver_report: [u8; 432],
    #[serde(with = "b64::fixed")]
    pub hpke_public_key: [u8; 32],
    #[serde(with = "b64::var")]
    pub receiver_authorization: Vec<u8>,
    /// Only from an upgrader: committee-signed evidence of the node release the keys are for
    /// (empty otherwise). The holder decides on it, and it is bound into T2.
    #[serde(with = "b64::var")]
    pub destination: Vec<u8>,
}

/// Holder → receiver: the keyring under HPKE, and a holder report (REPORTDATA = T3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    #[serde(with = "b64::fixed")]
    pub session: SessionId,
    #[serde(with = "b64::fixed")]
    pub encapsulated_key: [u8; 32],
    #[serde(with = "b64::var")]
    pub ciphertext: Vec<u8>,
    #[serde(with = "b64::fixed")]
    pub holder_report: [u8; 432],
}

/// Receiver → holder, once the keys are sealed durably: a report (REPORTDATA = T4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    #[serde(with = "b64::fixed")]
    pub session: SessionId,
    #[serde(with = "b64::fixed")]
    pub receiver_report: [u8; 432],
    #[serde(with = "b64::fixed")]
    pub keyring_fingerprint: [u8; 32],
}

/// Holder → receiver: the acknowledgement was accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivered {
    #[serde(with = "b64::fixed")]
    pub session: SessionId,
    #[serde(with = "b64::fixed")]
    pub keyring_fingerprint: [u8; 32],
}

/// Any refusal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code, see [`crate::HandoverError::code`].
    pub error: String,
    pub message: String,
}

pub mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub mod fixed {
        use super::*;
        pub fn serialize<S: Serializer, const N: usize>(
            v: &[u8; N],
            s: S,
        ) -> Result<S::Ok, S::Error> {
            s.serialize_str(&STANDARD.encode(v))
        }
        pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
            d: D,
        ) -> Result<[u8; N], D::Error> {
            let s = <&str>::deserialize(d)?;
            if s.len() > N.div_ceil(3) * 4 {
                return Err(D::Error::custom(format!(
                    "base64 field longer than {N} bytes"
                )));
            }
            let v = STANDARD
                .decode(s)
                .map_err(|e| D::Error::custom(format!("invalid base64: {e}")))?;
            v.as_slice()
                .try_into()
                .map_err(|_| D::Error::custom(format!("field must be {N} bytes, got {}", v.len())))
        }
    }

    pub mod var {
        use super::*;
        /// Bound on any variable field before decoding; the state machines apply the tighter
        /// per-field limits.
        const MAX: usize = 512 * 1024;
        pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&STANDARD.encode(v))
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            let s = <&str>::deserialize(d)?;
            if s.len() > MAX {
                return Err(D::Error::custom("base64 field too long"));
            }
            STANDARD
                .decode(s)
                .map_err(|e| D::Error::custom(format!("invalid base64: {e}")))
        }
    }
}
