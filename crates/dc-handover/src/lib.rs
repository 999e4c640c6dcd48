//! `dc-handover`: moving application keys between enclaves.
//!
//! A *holder* (the running node, or the upgrade agent) gives its keyring to a *receiver* (the
//! agent, or the new node) after mutual SGX local attestation:
//!
//! ```text
//! receiver                                   holder
//!   Hello { target_info }              ──►
//!                                      ◄──   Challenge { session, nonce, deadline,
//!                                                        holder report (T1) }
//!   Response { receiver report (T2),   ──►   verify MAC, T2, DEBUG, authorization, version;
//!              HPKE public key }              consume the nonce
//!                                      ◄──   Keys { HPKE(keyring; info/aad = T2),
//!                                                   holder report (T3) }
//!   verify, open, seal durably
//!   Ack { receiver report (T4) }       ──►   keys are durable at the receiver
//!                                      ◄──   Delivered
//! ```
//!
//! The core ([`Holder`], [`Receiver`]) is sans-IO: it is fed messages, the current time and
//! randomness, and calls the [`dc_tee::Tee`] for reports; it opens no sockets and reads no
//! clock. [`http`] is the thin transport. `docs/protocol.md` is the normative description.

pub mod authz;
mod error;
pub mod holder;
pub mod keyring;
pub mod messages;
pub mod receiver;
pub mod transcript;

#[cfg(feature = "http")]
pub mod http;

pub use authz::{Authorizer, AuthzError, Destination, PeerRole, StaticAllowList, Version};
pub use error::HandoverError;
pub use holder::{Delivery, Holder, HolderConfig};
pub use keyring::Keyring;
pub use receiver::{Received, Receiver, ReceiverConfig};

/// `s` cut to `max` characters, with control characters and the invisible ones that reorder
/// or hide text (bidi overrides and isolates, zero-width marks) replaced by U+FFFD: text from
/// a peer or the host, made safe to log, store and print, and bounded (escaping cannot grow it
/// past 4 bytes a character).
pub fn printable(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| {
            let hidden = matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}');
            if c.is_control() || hidden {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}
