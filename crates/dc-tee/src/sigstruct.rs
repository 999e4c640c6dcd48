//! SIGSTRUCT (1808 bytes): the signed enclave identity a Gramine bundle carries as `.sig`
//! (Intel SDM vol. 3D, "Enclave Signature Structure"). Parsing it lets the agent check a
//! downloaded Gramine bundle against the committee-signed EnclaveID before launching it:
//! ENCLAVEHASH is the MRENCLAVE the CPU will compute at EINIT (which also verifies the RSA
//! signature), and MRSIGNER is SHA-256 of the signer's 3072-bit modulus as stored.

use sha2::{Digest, Sha256};

use crate::sgx::{Attributes, LayoutError, Measurement};

pub const LEN: usize = 1808;
const HEADER: [u8; 16] = [0x06, 0, 0, 0, 0xE1, 0, 0, 0, 0, 0, 0x01, 0, 0, 0, 0, 0];
const HEADER2: [u8; 16] = [
    0x01, 0x01, 0, 0, 0x60, 0, 0, 0, 0x60, 0, 0, 0, 0x01, 0, 0, 0,
];

pub const OFF_VENDOR: usize = 16;
pub const OFF_DATE: usize = 20;
pub const OFF_HEADER2: usize = 24;
pub const OFF_MODULUS: usize = 128;
pub const OFF_EXPONENT: usize = 512;
pub const OFF_SIGNATURE: usize = 516;
pub const OFF_MISCSELECT: usize = 900;
pub const OFF_MISCMASK: usize = 904;
pub const OFF_ATTRIBUTES: usize = 928;
pub const OFF_ATTRIBUTEMASK: usize = 944;
pub const OFF_ENCLAVEHASH: usize = 960;
pub const OFF_ISVPRODID: usize = 1024;
pub const OFF_ISVSVN: usize = 1026;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigstructError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("not a SIGSTRUCT: {0}")]
    Header(&'static str),
    #[error("SIGSTRUCT exponent is {0}, SGX requires 3")]
    Exponent(u32),
}

/// The identity fields of a SIGSTRUCT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sigstruct {
    /// 0x8086 for Intel, 0 otherwise.
    pub vendor: u32,
    /// BCD yyyymmdd.
    pub date: u32,
    pub modulus: [u8; 384],
    pub misc_select: u32,
    pub misc_mask: u32,
    pub attributes: Attributes,
    pub attribute_mask: Attributes,
    /// ENCLAVEHASH = MRENCLAVE.
    pub enclave_hash: Measurement,
    pub isv_prod_id: u16,
    pub isv_svn: u16,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn attrs_at(b: &[u8], o: usize) -> Attributes {
    Attributes {
        flags: u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes")),
        xfrm: u64::from_le_bytes(b[o + 8..o + 16].try_into().expect("8 bytes")),
    }
}

impl Sigstruct {
    pub fn parse(b: &[u8]) -> Result<Self, SigstructError> {
        if b.len() != LEN {
            return Err(LayoutError::Length {
                what: "SIGSTRUCT",
                expected: LEN,
                got: b.len(),
            }
            .into());
        }
        if b[..16] != HEADER {
            return Err(SigstructError::Header("HEADER mismatch"));
        }
        if b[OFF_HEADER2..OFF_HEADER2 + 16] != HEADER2 {
            return Err(SigstructError::Header("HEADER2 mismatch"));
        }
        let vendor = u32_at(b, OFF_VENDOR);
        if vendor != 0 && vendor != 0x8086 {
            return Err(SigstructError::Header("VENDOR is neither 0 nor 0x8086"));
        }
        let exponent = u32_at(b, OFF_EXPONENT);
        if exponent != 3 {
            return Err(SigstructError::Exponent(exponent));
        }
        Ok(Self {
            vendor,
            date: u32_at(b, OFF_DATE),
            modulus: b[OFF_MODULUS..OFF_MODULUS + 384]
                .try_into()
                .expect("384 bytes"),
            misc_select: u32_at(b, OFF_MISCSELECT),
            misc_mask: u32_at(b, OFF_MISCMASK),
            attributes: attrs_at(b, OFF_ATTRIBUTES),
            attribute_mask: attrs_at(b, OFF_ATTRIBUTEMASK),
            enclave_hash: Measurement(
                b[OFF_ENCLAVEHASH..OFF_ENCLAVEHASH + 32]
                    .try_into()
                    .expect("32 bytes"),
            ),
            isv_prod_id: u16_at(b, OFF_ISVPRODID),
            isv_svn: u16_at(b, OFF_ISVSVN),
        })
    }

    /// MRSIGNER: SHA-256 of the modulus bytes as stored (little-endian).
    pub fn mr_signer(&self) -> Measurement {
        Measurement(Sha256::digest(self.modulus).into())
    }

    /// The 1808 bytes of this SIGSTRUCT with an all-zero RSA signature and Q1/Q2: for tests
    /// and tooling that need the layout; the CPU would refuse it at EINIT.
    pub fn encode_unsigned(&self) -> Vec<u8> {
        let mut b = vec![0u8; LEN];
        b[..16].copy_from_slice(&HEADER);
        b[OFF_VENDOR..OFF_VENDOR + 4].copy_from_slice(&self.vendor.to_le_bytes());
        b[OFF_DATE..OFF_DATE + 4].copy_from_slice(&self.date.to_le_bytes());
        b[OFF_HEADER2..OFF_HEADER2 + 16].copy_from_slice(&HEADER2);
        b[OFF_MODULUS..OFF_MODULUS + 384].copy_from_slice(&self.modulus);
        b[OFF_EXPONENT..OFF_EXPONENT + 4].copy_from_slice(&3u32.to_le_bytes());
        b[OFF_MISCSELECT..OFF_MISCSELECT + 4].copy_from_slice(&self.misc_select.to_le_bytes());
        b[OFF_MISCMASK..OFF_MISCMASK + 4].copy_from_slice(&self.misc_mask.to_le_bytes());
        b[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 16].copy_from_slice(&self.attributes.to_bytes());
        b[OFF_ATTRIBUTEMASK..OFF_ATTRIBUTEMASK + 16]
            .copy_from_slice(&self.attribute_mask.to_bytes());
        b[OFF_ENCLAVEHASH..OFF_ENCLAVEHASH + 32].copy_from_slice(&self.enclave_hash.0);
        b[OFF_ISVPRODID..OFF_ISVPRODID + 2].copy_from_slice(&self.isv_prod_id.to_le_bytes());
        b[OFF_ISVSVN..OFF_ISVSVN + 2].copy_from_slice(&self.isv_svn.to_le_bytes());
        b
    }

    /// Whether the signed attributes let the enclave run with DEBUG.
    pub fn allows_debug(&self) -> bool {
        self.attributes.is_debug()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A SIGSTRUCT built from known values, byte by byte at the SDM offsets.
    pub fn build(enclave_hash: [u8; 32], isv_prod_id: u16, isv_svn: u16, debug: bool) -> Vec<u8> {
        let mut b = vec![0u8; LEN];
        b[..16].copy_from_slice(&HEADER);
        b[OFF_VENDOR..OFF_VENDOR + 4].copy_from_slice(&0x8086u32.to_le_bytes());
        b[OFF_DATE..OFF_DATE + 4].copy_from_slice(&0x2026_1126u32.to_le_bytes());
        b[OFF_HEADER2..OFF_HEADER2 + 16].copy_from_slice(&HEADER2);
        for (i, x) in b[OFF_MODULUS..OFF_MODULUS + 384].iter_mut().enumerate() {
            *x = (i * 7 + 1) as u8;
        }
        b[OFF_EXPONENT..OFF_EXPONENT + 4].copy_from_slice(&3u32.to_le_bytes());
        b[OFF_SIGNATURE..OFF_SIGNATURE + 384].fill(0x5A);
        b[OFF_MISCSELECT..OFF_MISCSELECT + 4].copy_from_slice(&0u32.to_le_bytes());
        b[OFF_MISCMASK..OFF_MISCMASK + 4].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        let flags: u64 =
            Attributes::INIT | Attributes::MODE64BIT | if debug { Attributes::DEBUG } else { 0 };
        b[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 8].copy_from_slice(&flags.to_le_bytes());
        b[OFF_ATTRIBUTES + 8..OFF_ATTRIBUTES + 16].copy_from_slice(&3u64.to_le_bytes());
        b[OFF_ATTRIBUTEMASK..OFF_ATTRIBUTEMASK + 16].fill(0xFF);
        b[OFF_ENCLAVEHASH..OFF_ENCLAVEHASH + 32].copy_from_slice(&enclave_hash);
        b[OFF_ISVPRODID..OFF_ISVPRODID + 2].copy_from_slice(&isv_prod_id.to_le_bytes());
        b[OFF_ISVSVN..OFF_ISVSVN + 2].copy_from_slice(&isv_svn.to_le_bytes());
        b
    }

    #[test]
    fn parses_identity_fields_at_their_offsets() {
        let b = build([0xAB; 32], 7, 3, false);
        let s = Sigstruct::parse(&b).unwrap();
        assert_eq!(s.enclave_hash, Measurement([0xAB; 32]));
        assert_eq!((s.isv_prod_id, s.isv_svn), (7, 3));
        assert_eq!(s.vendor, 0x8086);
        assert_eq!(s.date, 0x2026_1126);
        assert!(!s.allows_debug());
        assert_eq!(s.attributes.xfrm, 3);
        assert_eq!(
            s.mr_signer(),
            Measurement(Sha256::digest(&b[128..512]).into())
        );
        assert!(Sigstruct::parse(&build([0; 32], 1, 1, true))
            .unwrap()
            .allows_debug());
        // The encoder writes every field back where the parser found it (the signature
        // region aside, which it leaves zero).
        let mut unsigned = b.clone();
        unsigned[OFF_SIGNATURE..OFF_SIGNATURE + 384].fill(0);
        assert_eq!(s.encode_unsigned(), unsigned);
    }

    #[test]
    fn refuses_what_is_not_a_sigstruct() {
        let good = build([1; 32], 1, 1, false);
        assert!(matches!(
            Sigstruct::parse(&good[..1807]),
            Err(SigstructError::Layout(_))
        ));
        let mut h = good.clone();
        h[4] = 0;
        assert_eq!(
            Sigstruct::parse(&h),
            Err(SigstructError::Header("HEADER mismatch"))
        );
        let mut h2 = good.clone();
        h2[OFF_HEADER2] = 9;
        assert_eq!(
            Sigstruct::parse(&h2),
            Err(SigstructError::Header("HEADER2 mismatch"))
        );
        let mut e = good.clone();
        e[OFF_EXPONENT] = 65;
        assert_eq!(Sigstruct::parse(&e), Err(SigstructError::Exponent(65)));
        let mut v = good;
        v[OFF_VENDOR] = 1;
        assert!(Sigstruct::parse(&v).is_err());
    }
}
