//! Sealed blobs.
//!
//! ```text
//! magic "DCSEAL\0\x01" (8) | KEYREQUEST (512) | nonce (12) | AES-256-GCM ciphertext + tag
//! ```
//! The 532-byte header is the AEAD's associated data (followed by the caller's own AAD), so
//! the recorded KEYREQUEST cannot be altered without detection. Recording the full request —
//! ISVSVN, CPUSVN, KEYID, masks — is what lets a blob still open after a microcode update
//! raises the platform CPUSVN: EGETKEY derives older-TCB keys on a newer platform.
//!
//! The EGETKEY key (128 bits, as on SGX) is expanded to the AES-256 key with HKDF-SHA256.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::sgx::{key_policy, Attributes, KeyId, KeyName, KeyRequest, Report};
use crate::Key128;

pub const MAGIC: [u8; 8] = *b"DCSEAL\0\x01";
pub const NONCE_LEN: usize = 12;
pub const HEADER_LEN: usize = MAGIC.len() + KeyRequest::LEN + NONCE_LEN;
pub const TAG_LEN: usize = 16;
/// Largest plaintext we seal or accept (keyrings are a few KiB; this bounds allocations).
pub const MAX_PLAINTEXT: usize = 16 * 1024 * 1024;
const HKDF_INFO: &[u8] = b"dc-tee seal key v1 aes-256-gcm";

/// Which identity a blob is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealPolicy {
    /// Only this exact enclave build (MRENCLAVE) can unseal.
    MrEnclave,
    /// Any build by the same signer with the same ISVPRODID and an ISVSVN at least this one's.
    MrSigner,
}

impl SealPolicy {
    /// The KEYPOLICY bits a seal key of this policy is derived with.
    pub const fn key_policy(self) -> u16 {
        match self {
            SealPolicy::MrEnclave => key_policy::MRENCLAVE,
            SealPolicy::MrSigner => key_policy::MRSIGNER,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SealPolicy::MrEnclave => "MRENCLAVE",
            SealPolicy::MrSigner => "MRSIGNER",
        }
    }
}

/// A sealed blob, as bytes ready to be written to disk.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedBlob(pub Vec<u8>);

impl std::fmt::Debug for SealedBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedBlob({} bytes)", self.0.len())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("sealed blob is {got} bytes, shorter than the {min}-byte minimum: truncated file?")]
    Truncated { got: usize, min: usize },
    #[error("not a dc-tee sealed blob (bad magic or unsupported format version)")]
    BadMagic,
    #[error("sealed blob header holds an invalid KEYREQUEST: {0}")]
    BadKeyRequest(String),
    #[error("sealed blob is larger than the {MAX_PLAINTEXT}-byte limit")]
    TooLarge,
    #[error("sealed blob does not open: it was sealed by another enclave identity or platform, with other associated data, or it was altered; the blob was left untouched")]
    Authentication,
    #[error("sealed blob's KEYREQUEST is not one this enclave would make ({0}): the blob was made by another enclave or altered, or is opened under the wrong policy; its request was not given to EGETKEY and the blob was left untouched")]
    UnexpectedKeyRequest(String),
    #[error("AES-GCM encryption failed")]
    Encrypt,
    #[error("no randomness for the nonce: {0}")]
    Random(String),
}

/// A blob split into its parts.
pub struct ParsedBlob<'a> {
    pub key_request: KeyRequest,
    header: &'a [u8],
    nonce: [u8; NONCE_LEN],
    ciphertext: &'a [u8],
}

/// The KEYREQUEST for a new seal key, derived as the Intel SDK does: this enclave's ISVSVN and
/// the platform's current CPUSVN (read from a report of ourselves), a fresh random KEYID.
pub fn seal_key_request(policy: SealPolicy, me: &Report, key_id: KeyId) -> KeyRequest {
    KeyRequest {
        key_name: KeyName::Seal as u16,
        key_policy: policy.key_policy(),
        isv_svn: me.isv_svn,
        cet_attributes_mask: 0,
        cpu_svn: me.cpu_svn,
        attribute_mask: Attributes {
            flags: KeyRequest::DEFAULT_FLAGS_MASK,
            xfrm: 0,
        },
        key_id,
        misc_mask: KeyRequest::DEFAULT_MISC_MASK,
        config_svn: 0,
    }
}

/// Checks that a blob's recorded KEYREQUEST is exactly what [`seal_key_request`] writes for
/// `policy` in an enclave whose ISVSVN is `own_isv_svn`, before it is given to EGETKEY.
///
/// The header is host-controlled until the AEAD check, which needs the key: without this,
/// another enclave could seal under a weaker request (KEYPOLICY 0, no attribute binding),
/// derive the same key itself and plant a blob this enclave would open as its own. CPUSVN
/// and KEYID stay free: an older CPUSVN is how blobs survive microcode updates (EGETKEY
/// refuses a newer one), and KEYID is random per blob.
pub fn check_key_request(
    policy: SealPolicy,
    req: &KeyRequest,
    own_isv_svn: u16,
) -> Result<(), SealError> {
    let refuse = |m: String| Err(SealError::UnexpectedKeyRequest(m));
    if req.key_name != KeyName::Seal as u16 {
        return refuse(format!("KEYNAME is {}, not SEAL (4)", req.key_name));
    }
    let want = policy.key_policy();
    if req.key_policy != want {
        return refuse(format!(
            "KEYPOLICY is {:#06x}, a {} blob has exactly {want:#06x}",
            req.key_policy,
            policy.name()
        ));
    }
    let mask = req.attribute_mask;
    if mask.flags != KeyRequest::DEFAULT_FLAGS_MASK || mask.xfrm != 0 {
        return refuse(format!(
            "ATTRIBUTEMASK is flags {:#x} xfrm {:#x}, expected flags {:#x} xfrm 0x0",
            mask.flags,
            mask.xfrm,
            KeyRequest::DEFAULT_FLAGS_MASK
        ));
    }
    if req.misc_mask != KeyRequest::DEFAULT_MISC_MASK {
        return refuse(format!(
            "MISCMASK is {:#x}, expected {:#x}",
            req.misc_mask,
            KeyRequest::DEFAULT_MISC_MASK
        ));
    }
    if req.cet_attributes_mask != 0 {
        return refuse(format!(
            "CET_ATTRIBUTES_MASK is {:#x}, expected 0",
            req.cet_attributes_mask
        ));
    }
    if req.config_svn != 0 {
        return refuse(format!("CONFIGSVN is {}, expected 0", req.config_svn));
    }
    match policy {
        SealPolicy::MrEnclave if req.isv_svn != own_isv_svn => refuse(format!(
            "ISVSVN is {}, but an MRENCLAVE blob of this enclave records its own ISVSVN {own_isv_svn}",
            req.isv_svn
        )),
        SealPolicy::MrSigner if req.isv_svn > own_isv_svn => refuse(format!(
            "ISVSVN is {}, above this enclave's {own_isv_svn}: the blob was sealed by a newer enclave version",
            req.isv_svn
        )),
        _ => Ok(()),
    }
}

fn aead_key(key: &Key128) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(None, key.expose())
        .expand(HKDF_INFO, out.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    out
}

/// Seals with an already-derived seal key.
pub fn seal_with_key(
    request: &KeyRequest,
    key: &Key128,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<SealedBlob, SealError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(SealError::TooLarge);
    }
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::getrandom(&mut nonce).map_err(|e| SealError::Random(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&request.to_bytes());
    out.extend_from_slice(&nonce);
    let k = aead_key(key);
    let cipher = Aes256Gcm::new_from_slice(k.as_ref()).expect("32-byte key");
    let full_aad = [&out[..HEADER_LEN], aad].concat();
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &full_aad,
            },
        )
        .map_err(|_| SealError::Encrypt)?;
    out.extend_from_slice(&ct);
    Ok(SealedBlob(out))
}

/// Splits a blob and validates its header; no key is needed yet.
pub fn parse(blob: &[u8]) -> Result<ParsedBlob<'_>, SealError> {
    let min = HEADER_LEN + TAG_LEN;
    if blob.len() < min {
        return Err(SealError::Truncated {
            got: blob.len(),
            min,
        });
    }
    if blob.len() > min + MAX_PLAINTEXT {
        return Err(SealError::TooLarge);
    }
    if blob[..MAGIC.len()] != MAGIC {
        return Err(SealError::BadMagic);
    }
    let kr = &blob[MAGIC.len()..MAGIC.len() + KeyRequest::LEN];
    let key_request =
        KeyRequest::from_bytes(kr).map_err(|e| SealError::BadKeyRequest(e.to_string()))?;
    if key_request.key_name != KeyName::Seal as u16 {
        return Err(SealError::BadKeyRequest(format!(
            "KEYNAME is {}, not SEAL (4)",
            key_request.key_name
        )));
    }
    let nonce = blob[MAGIC.len() + KeyRequest::LEN..HEADER_LEN]
        .try_into()
        .expect("12 bytes");
    Ok(ParsedBlob {
        key_request,
        header: &blob[..HEADER_LEN],
        nonce,
        ciphertext: &blob[HEADER_LEN..],
    })
}

/// Opens a parsed blob with the key EGETKEY gave for its recorded KEYREQUEST.
pub fn open_with_key(
    blob: &ParsedBlob<'_>,
    key: &Key128,
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let k = aead_key(key);
    let cipher = Aes256Gcm::new_from_slice(k.as_ref()).expect("32-byte key");
    let full_aad = [blob.header, aad].concat();
    cipher
        .decrypt(
            Nonce::from_slice(&blob.nonce),
            Payload {
                msg: blob.ciphertext,
                aad: &full_aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| SealError::Authentication)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> KeyRequest {
        let mut me = Report::from_bytes(&[0u8; Report::LEN]).unwrap();
        me.isv_svn = 3;
        me.cpu_svn.0[0] = 7;
        seal_key_request(SealPolicy::MrSigner, &me, KeyId([9; 32]))
    }

    #[test]
    fn roundtrip_and_header_records_request() {
        let key = Key128::new([1; 16]);
        let blob = seal_with_key(&request(), &key, b"ctx", b"secret keys").unwrap();
        let parsed = parse(&blob.0).unwrap();
        assert_eq!(parsed.key_request, request());
        assert_eq!(parsed.key_request.isv_svn, 3);
        assert_eq!(parsed.key_request.cpu_svn.0[0], 7);
        assert_eq!(
            &open_with_key(&parsed, &key, b"ctx").unwrap()[..],
            b"secret keys"
        );
    }

    fn refusal(policy: SealPolicy, req: &KeyRequest, own_isv_svn: u16) -> String {
        match check_key_request(policy, req, own_isv_svn) {
            Err(SealError::UnexpectedKeyRequest(m)) => m,
            other => panic!("{req:?} under {policy:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn key_requests_this_enclave_writes_pass_the_check() {
        let mut me = Report::from_bytes(&[0u8; Report::LEN]).unwrap();
        me.isv_svn = 3;
        for policy in [SealPolicy::MrEnclave, SealPolicy::MrSigner] {
            let mut req = seal_key_request(policy, &me, KeyId([9; 32]));
            check_key_request(policy, &req, 3).unwrap();
            // CPUSVN and KEYID are free: older TCBs and every random KEYID must still open.
            req.cpu_svn.0 = [0xAB; 16];
            req.key_id = KeyId([0x55; 32]);
            check_key_request(policy, &req, 3).unwrap();
        }
        // An MRSIGNER blob of an older version of the family opens in a newer one.
        let req = seal_key_request(SealPolicy::MrSigner, &me, KeyId::ZERO);
        check_key_request(SealPolicy::MrSigner, &req, 4).unwrap();
    }

    #[test]
    fn every_bound_key_request_field_is_checked() {
        let mut me = Report::from_bytes(&[0u8; Report::LEN]).unwrap();
        me.isv_svn = 3;
        let enclave = seal_key_request(SealPolicy::MrEnclave, &me, KeyId([9; 32]));
        let signer = seal_key_request(SealPolicy::MrSigner, &me, KeyId([9; 32]));
        let with = |base: KeyRequest, f: &dyn Fn(&mut KeyRequest)| {
            let mut r = base;
            f(&mut r);
            r
        };
        let cases: Vec<(SealPolicy, KeyRequest, &str)> = vec![
            (
                SealPolicy::MrEnclave,
                with(enclave, &|r| r.key_name = KeyName::Report as u16),
                "KEYNAME",
            ),
            // The planted-blob attack: no identity bit at all.
            (
                SealPolicy::MrEnclave,
                with(enclave, &|r| r.key_policy = 0),
                "KEYPOLICY is 0x0000",
            ),
            (
                SealPolicy::MrSigner,
                with(signer, &|r| r.key_policy = 0),
                "KEYPOLICY is 0x0000",
            ),
            // A blob of the other policy, or with extra bits, is not this policy's blob.
            (SealPolicy::MrEnclave, signer, "KEYPOLICY"),
            (SealPolicy::MrSigner, enclave, "KEYPOLICY"),
            (
                SealPolicy::MrSigner,
                with(signer, &|r| r.key_policy |= key_policy::NOISVPRODID),
                "KEYPOLICY",
            ),
            (
                SealPolicy::MrEnclave,
                with(enclave, &|r| r.key_policy |= key_policy::MRSIGNER),
                "KEYPOLICY",
            ),
            (
                SealPolicy::MrEnclave,
                with(enclave, &|r| r.attribute_mask.flags = 0),
                "ATTRIBUTEMASK",
            ),
            (
                SealPolicy::MrEnclave,
                with(enclave, &|r| r.attribute_mask.flags &= !Attributes::DEBUG),
                "ATTRIBUTEMASK",
            ),
            (
                SealPolicy::MrSigner,
                with(signer, &|r| r.attribute_mask.xfrm = 3),
                "ATTRIBUTEMASK",
            ),
            (
                SealPolicy::MrEnclave,
                with(enclave, &|r| r.misc_mask = 0),
                "MISCMASK",
            ),
            (
                SealPolicy::MrSigner,
                with(signer, &|r| r.cet_attributes_mask = 1),
                "CET_ATTRIBUTES_MASK",
            ),
            (
                SealPolicy::MrEnclave,
                with(enclave, &|r| r.config_svn = 1),
                "CONFIGSVN",
            ),
            (
                SealPolicy::MrEnclave,
                with(enclave, &|r| r.isv_svn = 2),
                "ISVSVN is 2",
            ),
            (
                SealPolicy::MrEnclave,
                with(enclave, &|r| r.isv_svn = 4),
                "ISVSVN is 4",
            ),
            (
                SealPolicy::MrSigner,
                with(signer, &|r| r.isv_svn = 4),
                "newer enclave version",
            ),
        ];
        for (policy, req, names) in cases {
            let m = refusal(policy, &req, 3);
            assert!(m.contains(names), "{policy:?}: {m:?} does not name {names}");
        }
        let e = SealError::UnexpectedKeyRequest("x".into()).to_string();
        assert!(e.contains("left untouched") && e.contains("EGETKEY"), "{e}");
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let key = Key128::new([1; 16]);
        let blob = seal_with_key(&request(), &key, b"", b"0123456789")
            .unwrap()
            .0;
        for i in 0..blob.len() {
            let mut b = blob.clone();
            b[i] ^= 0x10;
            let opened = parse(&b).and_then(|p| open_with_key(&p, &key, b""));
            assert!(opened.is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn wrong_key_or_aad_or_truncation_fail_clearly() {
        let key = Key128::new([1; 16]);
        let blob = seal_with_key(&request(), &key, b"a", b"x").unwrap().0;
        let p = parse(&blob).unwrap();
        assert!(matches!(
            open_with_key(&p, &Key128::new([2; 16]), b"a"),
            Err(SealError::Authentication)
        ));
        assert!(matches!(
            open_with_key(&p, &key, b"b"),
            Err(SealError::Authentication)
        ));
        assert!(matches!(
            parse(&blob[..100]),
            Err(SealError::Truncated { .. })
        ));
        let mut bad = blob.clone();
        bad[0] = b'X';
        assert!(matches!(parse(&bad), Err(SealError::BadMagic)));
        let mut reserved = blob.clone();
        reserved[MAGIC.len() + 300] = 1;
        assert!(matches!(parse(&reserved), Err(SealError::BadKeyRequest(_))));
    }
}
