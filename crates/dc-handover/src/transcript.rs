//! The transcript hashes bound into each report's REPORTDATA (SHA-512, 64 bytes — exactly the
//! size of REPORTDATA). Each step's hash covers the previous one, so the last report binds the
//! whole exchange. Lengths of variable fields are u32 little-endian prefixes.

use dc_tee::{Measurement, ReportData, TargetInfo};
use sha2::{Digest, Sha512};

pub const CHALLENGE_DOMAIN: &[u8] = b"dc-handover/v2/challenge\0";
pub const RESPONSE_DOMAIN: &[u8] = b"dc-handover/v2/response\0";
pub const KEYS_DOMAIN: &[u8] = b"dc-handover/v2/keys\0";
pub const ACK_DOMAIN: &[u8] = b"dc-handover/v2/ack\0";
pub const HPKE_INFO_DOMAIN: &[u8] = b"dc-handover/v2/hpke\0";

fn var(h: &mut Sha512, b: &[u8]) {
    h.update((b.len() as u32).to_le_bytes());
    h.update(b);
}

fn done(h: Sha512) -> ReportData {
    ReportData(h.finalize().into())
}

/// T1, the holder's challenge report data.
pub fn challenge(
    session: &[u8; 16],
    nonce: &[u8; 32],
    expires_at_ms: u64,
    receiver_target: &TargetInfo,
    holder_authorization: &[u8],
) -> ReportData {
    let mut h = Sha512::new();
    h.update(CHALLENGE_DOMAIN);
    h.update(session);
    h.update(nonce);
    h.update(expires_at_ms.to_le_bytes());
    h.update(receiver_target.to_bytes());
    var(&mut h, holder_authorization);
    done(h)
}

/// T2, the receiver's response report data.
pub fn response(
    t1: &ReportData,
    holder_report: &[u8; 432],
    holder: &Measurement,
    receiver: &Measurement,
    hpke_public_key: &[u8; 32],
    receiver_authorization: &[u8],
    destination: &[u8],
) -> ReportData {
    let mut h = Sha512::new();
    h.update(RESPONSE_DOMAIN);
    h.update(t1.0);
    h.update(holder_report);
    h.update(holder.0);
    h.update(receiver.0);
    h.update(hpke_public_key);
    var(&mut h, receiver_authorization);
    var(&mut h, destination);
    done(h)
}

/// T3, the holder's keys report data.
pub fn keys(t2: &ReportData, encapsulated_key: &[u8; 32], ciphertext: &[u8]) -> ReportData {
    let mut h = Sha512::new();
    h.update(KEYS_DOMAIN);
    h.update(t2.0);
    h.update(encapsulated_key);
    var(&mut h, ciphertext);
    done(h)
}

/// T4, the receiver's acknowledgement report data.
pub fn ack(t3: &ReportData, keyring_fingerprint: &[u8; 32]) -> ReportData {
    let mut h = Sha512::new();
    h.update(ACK_DOMAIN);
    h.update(t3.0);
    h.update(keyring_fingerprint);
    done(h)
}

/// HPKE `info`: a domain string and T2. (The AAD is T2 itself.)
pub fn hpke_info(t2: &ReportData) -> Vec<u8> {
    [HPKE_INFO_DOMAIN, &t2.0].concat()
}
