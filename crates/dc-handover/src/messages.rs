//! Wire messages (`docs/protocol.md` §3–4). Each is exactly one JSON object:
//! - every field is required (also when its value is empty), `null` is no value, unknown
//!   fields and repeated fields are refused, and so is any other JSON type in place of the
//!   object (serde would otherwise read a struct from an array of its values);
//! - binary fields are JSON strings holding canonical standard base64 (RFC 4648 §4, with
//!   padding, zero trailing bits, no whitespace or line breaks): exactly the string the
//!   encoder produces for the decoded bytes, which is checked by re-encoding. JSON escapes in
//!   the string are decoded first;
//! - integers are JSON numbers without sign, fraction or exponent, in the `u64` range.
//!
//! The binary forms the transcript hashes cover are exactly the decoded bytes.

use serde::{Deserialize, Deserializer, Serialize};

/// Largest authorization evidence a peer may send (e.g. committee signatures); also the
/// largest destination evidence.
pub const MAX_AUTHORIZATION: usize = 16 * 1024;
/// Largest HPKE ciphertext (a maximal keyring plus the tag).
pub const MAX_CIPHERTEXT: usize = crate::keyring::MAX_ENCODED_LEN + 16;

pub type SessionId = [u8; 16];

/// Deserializes `T` only from a map (a JSON object), never from a sequence.
fn object_only<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    struct ObjectOnly<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectOnly<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<T, M::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_map(ObjectOnly(std::marker::PhantomData))
}

/// Declares a wire message: the public struct (serialized by serde in field order) and its
/// strict deserialization through a private mirror with the same fields and attributes.
macro_rules! message {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Serialize)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Fields {
                    $( $(#[$fmeta])* $field: $ty, )*
                }
                let f: Fields = object_only(d)?;
                Ok(Self { $( $field: f.$field, )* })
            }
        }
    };
}

message! {
    /// Receiver → holder: "I want the keys; make your challenge report for this target."
    pub struct Hello {
        #[serde(with = "b64::fixed")]
        pub target_info: [u8; 512],
    }
}

message! {
    /// Holder → receiver: a fresh nonce with its deadline, in a report of the holder for the
    /// receiver whose REPORTDATA is T1.
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
}

message! {
    /// Receiver → holder: the receiver's report for the holder (REPORTDATA = T2), binding its
    /// ephemeral HPKE public key and its authorization evidence.
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
}

message! {
    /// Holder → receiver: the keyring under HPKE, and a holder report (REPORTDATA = T3).
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
}

message! {
    /// Receiver → holder, once the keys are sealed durably: a report (REPORTDATA = T4).
    pub struct Ack {
        #[serde(with = "b64::fixed")]
        pub session: SessionId,
        #[serde(with = "b64::fixed")]
        pub receiver_report: [u8; 432],
        #[serde(with = "b64::fixed")]
        pub keyring_fingerprint: [u8; 32],
    }
}

message! {
    /// Holder → receiver: the acknowledgement was accepted.
    pub struct Delivered {
        #[serde(with = "b64::fixed")]
        pub session: SessionId,
        #[serde(with = "b64::fixed")]
        pub keyring_fingerprint: [u8; 32],
    }
}

/// Any refusal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code, see [`crate::HandoverError::code`].
    pub error: String,
    pub message: String,
}

pub mod b64 {
    //! Binary fields: canonical standard base64 in a JSON string.
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    /// Decodes `s`, refusing anything but the canonical encoding of the result (the one
    /// [`STANDARD`] writes): padding present, unused trailing bits zero, no whitespace, line
    /// breaks or other characters.
    pub fn decode_canonical(s: &str) -> Result<Vec<u8>, String> {
        let v = STANDARD
            .decode(s)
            .map_err(|e| format!("invalid base64: {e}"))?;
        if STANDARD.encode(&v) != s {
            return Err("base64 is not in canonical form".into());
        }
        Ok(v)
    }

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
            let s = String::deserialize(d)?;
            if s.len() != N.div_ceil(3) * 4 {
                return Err(D::Error::custom(format!(
                    "field must be {N} bytes: {} base64 characters, got {}",
                    N.div_ceil(3) * 4,
                    s.len()
                )));
            }
            let v = decode_canonical(&s).map_err(D::Error::custom)?;
            v.as_slice()
                .try_into()
                .map_err(|_| D::Error::custom(format!("field must be {N} bytes, got {}", v.len())))
        }
    }

    pub mod var {
        use super::*;
        /// Bound on any variable field before decoding, in characters: the base64 length of
        /// the largest one, a maximal ciphertext. The state machines apply the tighter
        /// per-field limits after decoding.
        pub const MAX: usize = crate::messages::MAX_CIPHERTEXT.div_ceil(3) * 4;
        pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&STANDARD.encode(v))
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            let s = String::deserialize(d)?;
            if s.len() > MAX {
                return Err(D::Error::custom("base64 field too long"));
            }
            decode_canonical(&s).map_err(D::Error::custom)
        }
    }
}
