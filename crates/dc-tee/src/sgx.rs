//! SGX architectural structures with byte-exact layouts (Intel SDM vol. 3D, §38.x;
//! mirrored from `sgx-isa` and Gramine's `sgx_arch.h`).
//!
//! Parsing is strict: wrong lengths and non-zero reserved bytes are errors, so that
//! `from_bytes(b).to_bytes() == b` for every accepted input. That property is what lets the
//! MAC be checked over the canonical encoding.

use std::fmt;

/// Why bytes could not be read as an SGX structure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("{what} must be exactly {expected} bytes, got {got}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error(
        "{what}: reserved byte at offset {offset} is not zero (corrupted or not an SGX {what})"
    )]
    ReservedNotZero { what: &'static str, offset: usize },
}

macro_rules! byte_newtype {
    ($(#[$m:meta])* $name:ident, $len:expr) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            pub const LEN: usize = $len;
            pub const ZERO: Self = Self([0u8; $len]);

            /// Reads from a slice of exactly the right length.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, LayoutError> {
                let a: [u8; $len] = bytes.try_into().map_err(|_| LayoutError::Length {
                    what: stringify!($name),
                    expected: $len,
                    got: bytes.len(),
                })?;
                Ok(Self(a))
            }

            /// Parses lowercase or uppercase hex of exactly the right length.
            pub fn from_hex(s: &str) -> Result<Self, LayoutError> {
                let mut a = [0u8; $len];
                hex::decode_to_slice(s.trim(), &mut a).map_err(|_| LayoutError::Length {
                    what: stringify!($name),
                    expected: $len * 2,
                    got: s.trim().len(),
                })?;
                Ok(Self(a))
            }

            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), hex::encode(self.0))
            }
        }
    };
}

byte_newtype!(
    /// An enclave measurement: MRENCLAVE, or MRSIGNER (SHA-256 of the signer's public key).
    Measurement, 32
);
byte_newtype!(
    /// The security version of the CPU's microcode and firmware (opaque, compared per byte).
    CpuSvn, 16
);
byte_newtype!(
    /// Key diversification value of a KEYREQUEST or the report key id of a REPORT.
    KeyId, 32
);
byte_newtype!(
    /// The 64 bytes an enclave binds into its report.
    ReportData, 64
);
byte_newtype!(
    /// The MAC of a REPORT.
    ReportMac, 16
);
byte_newtype!(
    /// CONFIGID (SGX2 KSS); all zero for our enclaves.
    ConfigId, 64
);
byte_newtype!(
    /// ISVEXTPRODID / ISVFAMILYID (SGX2 KSS); all zero for our enclaves.
    Isv16, 16
);

impl CpuSvn {
    /// True when every component of `self` is at most the matching one of `current`, which is
    /// what EGETKEY requires of a requested CPUSVN (an older TCB's key may be derived on a newer
    /// platform, never the reverse).
    pub fn is_at_most(&self, current: &CpuSvn) -> bool {
        self.0.iter().zip(current.0.iter()).all(|(a, b)| a <= b)
    }
}

/// ATTRIBUTES: a flags word and XFRM.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Attributes {
    pub flags: u64,
    pub xfrm: u64,
}

impl Attributes {
    pub const INIT: u64 = 0x1;
    pub const DEBUG: u64 = 0x2;
    pub const MODE64BIT: u64 = 0x4;
    pub const LEN: usize = 16;

    pub fn is_debug(&self) -> bool {
        self.flags & Self::DEBUG != 0
    }

    fn read(b: &[u8]) -> Self {
        Self {
            flags: u64_at(b, 0),
            xfrm: u64_at(b, 8),
        }
    }

    fn write(&self, b: &mut [u8]) {
        b[0..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..16].copy_from_slice(&self.xfrm.to_le_bytes());
    }

    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        self.write(&mut b);
        b
    }
}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Attributes {{ flags: {:#x}, xfrm: {:#x} }}",
            self.flags, self.xfrm
        )
    }
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}
fn arr<const N: usize>(b: &[u8], o: usize) -> [u8; N] {
    b[o..o + N].try_into().expect("fixed range")
}

/// Checks that every byte in the given ranges is zero.
fn check_reserved(
    what: &'static str,
    b: &[u8],
    ranges: &[std::ops::Range<usize>],
) -> Result<(), LayoutError> {
    for r in ranges {
        if let Some(i) = b[r.clone()].iter().position(|&x| x != 0) {
            return Err(LayoutError::ReservedNotZero {
                what,
                offset: r.start + i,
            });
        }
    }
    Ok(())
}

fn exact<'a, const N: usize>(what: &'static str, b: &'a [u8]) -> Result<&'a [u8; N], LayoutError> {
    b.try_into().map_err(|_| LayoutError::Length {
        what,
        expected: N,
        got: b.len(),
    })
}

/// REPORT (432 bytes): what EREPORT produces. The body (bytes 0..384) is MAC'd with the
/// target enclave's report key.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Report {
    pub cpu_svn: CpuSvn,
    pub misc_select: u32,
    pub cet_attributes: u8,
    pub isv_ext_prod_id: Isv16,
    pub attributes: Attributes,
    pub mr_enclave: Measurement,
    pub mr_signer: Measurement,
    pub config_id: ConfigId,
    pub isv_prod_id: u16,
    pub isv_svn: u16,
    pub config_svn: u16,
    pub isv_family_id: Isv16,
    pub report_data: ReportData,
    pub key_id: KeyId,
    pub mac: ReportMac,
}

impl Report {
    pub const LEN: usize = 432;
    /// Length of the MAC'd body.
    pub const BODY_LEN: usize = 384;

    pub const OFF_CPUSVN: usize = 0;
    pub const OFF_MISCSELECT: usize = 16;
    pub const OFF_CET: usize = 20;
    pub const OFF_ISVEXTPRODID: usize = 32;
    pub const OFF_ATTRIBUTES: usize = 48;
    pub const OFF_MRENCLAVE: usize = 64;
    pub const OFF_MRSIGNER: usize = 128;
    pub const OFF_CONFIGID: usize = 192;
    pub const OFF_ISVPRODID: usize = 256;
    pub const OFF_ISVSVN: usize = 258;
    pub const OFF_CONFIGSVN: usize = 260;
    pub const OFF_ISVFAMILYID: usize = 304;
    pub const OFF_REPORTDATA: usize = 320;
    pub const OFF_KEYID: usize = 384;
    pub const OFF_MAC: usize = 416;

    const RESERVED: [std::ops::Range<usize>; 4] = [21..32, 96..128, 160..192, 262..304];

    pub fn from_bytes(b: &[u8]) -> Result<Self, LayoutError> {
        let b = exact::<{ Self::LEN }>("REPORT", b)?;
        check_reserved("REPORT", b, &Self::RESERVED)?;
        Ok(Self {
            cpu_svn: CpuSvn(arr(b, Self::OFF_CPUSVN)),
            misc_select: u32_at(b, Self::OFF_MISCSELECT),
            cet_attributes: b[Self::OFF_CET],
            isv_ext_prod_id: Isv16(arr(b, Self::OFF_ISVEXTPRODID)),
            attributes: Attributes::read(&b[Self::OFF_ATTRIBUTES..]),
            mr_enclave: Measurement(arr(b, Self::OFF_MRENCLAVE)),
            mr_signer: Measurement(arr(b, Self::OFF_MRSIGNER)),
            config_id: ConfigId(arr(b, Self::OFF_CONFIGID)),
            isv_prod_id: u16_at(b, Self::OFF_ISVPRODID),
            isv_svn: u16_at(b, Self::OFF_ISVSVN),
            config_svn: u16_at(b, Self::OFF_CONFIGSVN),
            isv_family_id: Isv16(arr(b, Self::OFF_ISVFAMILYID)),
            report_data: ReportData(arr(b, Self::OFF_REPORTDATA)),
            key_id: KeyId(arr(b, Self::OFF_KEYID)),
            mac: ReportMac(arr(b, Self::OFF_MAC)),
        })
    }

    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..16].copy_from_slice(&self.cpu_svn.0);
        b[16..20].copy_from_slice(&self.misc_select.to_le_bytes());
        b[20] = self.cet_attributes;
        b[32..48].copy_from_slice(&self.isv_ext_prod_id.0);
        self.attributes.write(&mut b[48..64]);
        b[64..96].copy_from_slice(&self.mr_enclave.0);
        b[128..160].copy_from_slice(&self.mr_signer.0);
        b[192..256].copy_from_slice(&self.config_id.0);
        b[256..258].copy_from_slice(&self.isv_prod_id.to_le_bytes());
        b[258..260].copy_from_slice(&self.isv_svn.to_le_bytes());
        b[260..262].copy_from_slice(&self.config_svn.to_le_bytes());
        b[304..320].copy_from_slice(&self.isv_family_id.0);
        b[320..384].copy_from_slice(&self.report_data.0);
        b[384..416].copy_from_slice(&self.key_id.0);
        b[416..432].copy_from_slice(&self.mac.0);
        b
    }

    /// The bytes covered by the MAC.
    pub fn body(&self) -> [u8; Self::BODY_LEN] {
        arr(&self.to_bytes(), 0)
    }

    /// The enclave identity the report claims (unverified until its MAC is checked).
    pub fn identity(&self) -> EnclaveIdentity {
        EnclaveIdentity {
            mr_enclave: self.mr_enclave,
            mr_signer: self.mr_signer,
            isv_prod_id: self.isv_prod_id,
            isv_svn: self.isv_svn,
            attributes: self.attributes,
            misc_select: self.misc_select,
            config_id: self.config_id,
            config_svn: self.config_svn,
            cet_attributes: self.cet_attributes,
        }
    }

    /// A TARGETINFO for sending a report back to the enclave that made this one.
    pub fn to_target_info(&self) -> TargetInfo {
        TargetInfo {
            mr_enclave: self.mr_enclave,
            attributes: self.attributes,
            cet_attributes: self.cet_attributes,
            config_svn: self.config_svn,
            misc_select: self.misc_select,
            config_id: self.config_id,
        }
    }
}

/// Who an enclave is, as the CPU states it in a report.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EnclaveIdentity {
    pub mr_enclave: Measurement,
    pub mr_signer: Measurement,
    pub isv_prod_id: u16,
    pub isv_svn: u16,
    pub attributes: Attributes,
    pub misc_select: u32,
    pub config_id: ConfigId,
    pub config_svn: u16,
    pub cet_attributes: u8,
}

impl EnclaveIdentity {
    pub fn is_debug(&self) -> bool {
        self.attributes.is_debug()
    }

    /// The TARGETINFO other enclaves use to make reports for this one.
    pub fn target_info(&self) -> TargetInfo {
        TargetInfo {
            mr_enclave: self.mr_enclave,
            attributes: self.attributes,
            cet_attributes: self.cet_attributes,
            config_svn: self.config_svn,
            misc_select: self.misc_select,
            config_id: self.config_id,
        }
    }
}

/// TARGETINFO (512 bytes): names the enclave a report is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TargetInfo {
    pub mr_enclave: Measurement,
    pub attributes: Attributes,
    pub cet_attributes: u8,
    pub config_svn: u16,
    pub misc_select: u32,
    pub config_id: ConfigId,
}

impl TargetInfo {
    pub const LEN: usize = 512;
    pub const OFF_MRENCLAVE: usize = 0;
    pub const OFF_ATTRIBUTES: usize = 32;
    pub const OFF_CET: usize = 48;
    pub const OFF_CONFIGSVN: usize = 50;
    pub const OFF_MISCSELECT: usize = 52;
    pub const OFF_CONFIGID: usize = 64;

    const RESERVED: [std::ops::Range<usize>; 3] = [49..50, 56..64, 128..512];

    pub fn from_bytes(b: &[u8]) -> Result<Self, LayoutError> {
        let b = exact::<{ Self::LEN }>("TARGETINFO", b)?;
        check_reserved("TARGETINFO", b, &Self::RESERVED)?;
        Ok(Self {
            mr_enclave: Measurement(arr(b, 0)),
            attributes: Attributes::read(&b[32..48]),
            cet_attributes: b[48],
            config_svn: u16_at(b, 50),
            misc_select: u32_at(b, 52),
            config_id: ConfigId(arr(b, 64)),
        })
    }

    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..32].copy_from_slice(&self.mr_enclave.0);
        self.attributes.write(&mut b[32..48]);
        b[48] = self.cet_attributes;
        b[50..52].copy_from_slice(&self.config_svn.to_le_bytes());
        b[52..56].copy_from_slice(&self.misc_select.to_le_bytes());
        b[64..128].copy_from_slice(&self.config_id.0);
        b
    }
}

/// KEYNAME values of a KEYREQUEST.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u16)]
pub enum KeyName {
    Report = 3,
    Seal = 4,
}

/// KEYPOLICY bits of a KEYREQUEST.
pub mod key_policy {
    pub const MRENCLAVE: u16 = 0x01;
    pub const MRSIGNER: u16 = 0x02;
    pub const NOISVPRODID: u16 = 0x04;
    pub const CONFIGID: u16 = 0x08;
    pub const ISVFAMILYID: u16 = 0x10;
    pub const ISVEXTPRODID: u16 = 0x20;
    /// Every bit the architecture defines; others must be zero.
    pub const ALL: u16 = 0x3f;
}

/// KEYREQUEST (512 bytes): the input of EGETKEY.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KeyRequest {
    /// Raw KEYNAME; see [`KeyName`]. Kept raw so unknown names reach EGETKEY and fail there,
    /// as on hardware.
    pub key_name: u16,
    pub key_policy: u16,
    pub isv_svn: u16,
    pub cet_attributes_mask: u8,
    pub cpu_svn: CpuSvn,
    pub attribute_mask: Attributes,
    pub key_id: KeyId,
    pub misc_mask: u32,
    pub config_svn: u16,
}

impl KeyRequest {
    pub const LEN: usize = 512;
    pub const OFF_KEYNAME: usize = 0;
    pub const OFF_KEYPOLICY: usize = 2;
    pub const OFF_ISVSVN: usize = 4;
    pub const OFF_CET_MASK: usize = 6;
    pub const OFF_CPUSVN: usize = 8;
    pub const OFF_ATTRIBUTEMASK: usize = 24;
    pub const OFF_KEYID: usize = 40;
    pub const OFF_MISCMASK: usize = 72;
    pub const OFF_CONFIGSVN: usize = 76;

    /// Attribute mask the Intel SGX SDK uses for sealing: INIT, DEBUG, MODE64BIT and the
    /// upper byte of reserved flags; XFRM not bound.
    pub const DEFAULT_FLAGS_MASK: u64 = 0xFF00_0000_0000_000B;
    pub const DEFAULT_MISC_MASK: u32 = 0xF000_0000;

    const RESERVED: [std::ops::Range<usize>; 2] = [7..8, 78..512];

    pub fn from_bytes(b: &[u8]) -> Result<Self, LayoutError> {
        let b = exact::<{ Self::LEN }>("KEYREQUEST", b)?;
        check_reserved("KEYREQUEST", b, &Self::RESERVED)?;
        Ok(Self {
            key_name: u16_at(b, 0),
            key_policy: u16_at(b, 2),
            isv_svn: u16_at(b, 4),
            cet_attributes_mask: b[6],
            cpu_svn: CpuSvn(arr(b, 8)),
            attribute_mask: Attributes::read(&b[24..40]),
            key_id: KeyId(arr(b, 40)),
            misc_mask: u32_at(b, 72),
            config_svn: u16_at(b, 76),
        })
    }

    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..2].copy_from_slice(&self.key_name.to_le_bytes());
        b[2..4].copy_from_slice(&self.key_policy.to_le_bytes());
        b[4..6].copy_from_slice(&self.isv_svn.to_le_bytes());
        b[6] = self.cet_attributes_mask;
        b[8..24].copy_from_slice(&self.cpu_svn.0);
        self.attribute_mask.write(&mut b[24..40]);
        b[40..72].copy_from_slice(&self.key_id.0);
        b[72..76].copy_from_slice(&self.misc_mask.to_le_bytes());
        b[76..78].copy_from_slice(&self.config_svn.to_le_bytes());
        b
    }

    /// The request for the caller's own report key, used to verify a report made for it.
    pub fn report_key(key_id: KeyId) -> Self {
        Self {
            key_name: KeyName::Report as u16,
            key_policy: 0,
            isv_svn: 0,
            cet_attributes_mask: 0,
            cpu_svn: CpuSvn::ZERO,
            attribute_mask: Attributes::default(),
            key_id,
            misc_mask: 0,
            config_svn: 0,
        }
    }
}

/// EGETKEY / EREPORT failures, with the SGX error codes where the architecture defines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EgetkeyError {
    #[error("EGETKEY: invalid attribute or reserved field in KEYREQUEST (SGX_INVALID_ATTRIBUTE)")]
    InvalidAttribute,
    #[error("EGETKEY: requested CPUSVN is newer than the platform's (SGX_INVALID_CPUSVN); the data was sealed on a newer TCB or the microcode was rolled back")]
    InvalidCpuSvn,
    #[error("EGETKEY: requested ISVSVN is above this enclave's (SGX_INVALID_ISVSVN); the data was sealed by a newer enclave version")]
    InvalidIsvSvn,
    #[error("EGETKEY: unknown KEYNAME (SGX_INVALID_KEYNAME)")]
    InvalidKeyName,
}

impl EgetkeyError {
    pub const fn code(self) -> u32 {
        match self {
            Self::InvalidAttribute => 2,
            Self::InvalidCpuSvn => 32,
            Self::InvalidIsvSvn => 64,
            Self::InvalidKeyName => 256,
        }
    }

    pub const fn from_code(code: u32) -> Option<Self> {
        match code {
            2 => Some(Self::InvalidAttribute),
            32 => Some(Self::InvalidCpuSvn),
            64 => Some(Self::InvalidIsvSvn),
            256 => Some(Self::InvalidKeyName),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Puts a distinct marker in every field so each offset is pinned independently.
    fn marked_report() -> Report {
        Report {
            cpu_svn: CpuSvn([0x11; 16]),
            misc_select: 0x2222_2222,
            cet_attributes: 0x33,
            isv_ext_prod_id: Isv16([0x44; 16]),
            attributes: Attributes {
                flags: 0x5555_5555_5555_5555,
                xfrm: 0x6666_6666_6666_6666,
            },
            mr_enclave: Measurement([0x77; 32]),
            mr_signer: Measurement([0x88; 32]),
            config_id: ConfigId([0x99; 64]),
            isv_prod_id: 0xAAAA,
            isv_svn: 0xBBBB,
            config_svn: 0xCCCC,
            isv_family_id: Isv16([0xDD; 16]),
            report_data: ReportData([0xEE; 64]),
            key_id: KeyId([0xF1; 32]),
            mac: ReportMac([0xF2; 16]),
        }
    }

    #[test]
    fn report_layout_is_byte_exact() {
        let b = marked_report().to_bytes();
        assert_eq!(b.len(), 432);
        let expect: &[(usize, usize, u8)] = &[
            (0, 16, 0x11),
            (16, 4, 0x22),
            (20, 1, 0x33),
            (32, 16, 0x44),
            (48, 8, 0x55),
            (56, 8, 0x66),
            (64, 32, 0x77),
            (128, 32, 0x88),
            (192, 64, 0x99),
            (256, 2, 0xAA),
            (258, 2, 0xBB),
            (260, 2, 0xCC),
            (304, 16, 0xDD),
            (320, 64, 0xEE),
            (384, 32, 0xF1),
            (416, 16, 0xF2),
        ];
        let mut covered = [false; 432];
        for &(off, len, v) in expect {
            assert!(b[off..off + len].iter().all(|&x| x == v), "field at {off}");
            covered[off..off + len].iter_mut().for_each(|c| *c = true);
        }
        for (i, c) in covered.iter().enumerate() {
            if !c {
                assert_eq!(b[i], 0, "reserved byte {i} must be zero");
            }
        }
        assert_eq!(Report::from_bytes(&b).unwrap(), marked_report());
        assert_eq!(marked_report().body()[..], b[..384]);
        // Little-endian integers.
        let mut r = marked_report();
        r.isv_svn = 0x0102;
        assert_eq!(&r.to_bytes()[258..260], &[0x02, 0x01]);
    }

    #[test]
    fn report_parse_rejects_bad_length_and_reserved_bytes() {
        let b = marked_report().to_bytes();
        assert_eq!(
            Report::from_bytes(&b[..431]),
            Err(LayoutError::Length {
                what: "REPORT",
                expected: 432,
                got: 431
            })
        );
        assert!(Report::from_bytes(&[b.as_slice(), &[0]].concat()).is_err());
        for off in [21, 31, 96, 127, 160, 191, 262, 303] {
            let mut bad = b;
            bad[off] = 1;
            assert_eq!(
                Report::from_bytes(&bad),
                Err(LayoutError::ReservedNotZero {
                    what: "REPORT",
                    offset: off
                })
            );
        }
    }

    #[test]
    fn target_info_layout_is_byte_exact() {
        let t = TargetInfo {
            mr_enclave: Measurement([0x77; 32]),
            attributes: Attributes {
                flags: 0x0101_0101_0101_0101,
                xfrm: 0x0202_0202_0202_0202,
            },
            cet_attributes: 0x33,
            config_svn: 0x4444,
            misc_select: 0x5555_5555,
            config_id: ConfigId([0x66; 64]),
        };
        let b = t.to_bytes();
        assert_eq!(b.len(), 512);
        assert!(b[0..32].iter().all(|&x| x == 0x77));
        assert!(b[32..40].iter().all(|&x| x == 0x01));
        assert!(b[40..48].iter().all(|&x| x == 0x02));
        assert_eq!(b[48], 0x33);
        assert_eq!(b[49], 0);
        assert_eq!(&b[50..52], &[0x44, 0x44]);
        assert_eq!(&b[52..56], &[0x55; 4]);
        assert!(b[56..64].iter().all(|&x| x == 0));
        assert!(b[64..128].iter().all(|&x| x == 0x66));
        assert!(b[128..].iter().all(|&x| x == 0));
        assert_eq!(TargetInfo::from_bytes(&b).unwrap(), t);
        let mut bad = b;
        bad[511] = 1;
        assert!(TargetInfo::from_bytes(&bad).is_err());
        assert!(TargetInfo::from_bytes(&b[..500]).is_err());
        // A report's target info names the report's enclave.
        let r = marked_report();
        assert_eq!(r.to_target_info().mr_enclave, r.mr_enclave);
        assert_eq!(r.to_target_info(), r.identity().target_info());
    }

    #[test]
    fn key_request_layout_is_byte_exact() {
        let k = KeyRequest {
            key_name: 0x0104,
            key_policy: 0x0203,
            isv_svn: 0x0305,
            cet_attributes_mask: 0x06,
            cpu_svn: CpuSvn([0x07; 16]),
            attribute_mask: Attributes {
                flags: 0x0808_0808_0808_0808,
                xfrm: 0x0909_0909_0909_0909,
            },
            key_id: KeyId([0x0A; 32]),
            misc_mask: 0x0B0B_0B0B,
            config_svn: 0x0C0D,
        };
        let b = k.to_bytes();
        assert_eq!(b.len(), 512);
        assert_eq!(&b[0..2], &[0x04, 0x01]);
        assert_eq!(&b[2..4], &[0x03, 0x02]);
        assert_eq!(&b[4..6], &[0x05, 0x03]);
        assert_eq!(b[6], 0x06);
        assert_eq!(b[7], 0);
        assert!(b[8..24].iter().all(|&x| x == 0x07));
        assert!(b[24..32].iter().all(|&x| x == 0x08));
        assert!(b[32..40].iter().all(|&x| x == 0x09));
        assert!(b[40..72].iter().all(|&x| x == 0x0A));
        assert_eq!(&b[72..76], &[0x0B; 4]);
        assert_eq!(&b[76..78], &[0x0D, 0x0C]);
        assert!(b[78..].iter().all(|&x| x == 0));
        assert_eq!(KeyRequest::from_bytes(&b).unwrap(), k);
        let mut bad = b;
        bad[100] = 1;
        assert_eq!(
            KeyRequest::from_bytes(&bad),
            Err(LayoutError::ReservedNotZero {
                what: "KEYREQUEST",
                offset: 100
            })
        );
    }

    #[test]
    fn cpusvn_ordering_is_per_component() {
        let a = CpuSvn([1; 16]);
        let mut b = a;
        b.0[3] = 2;
        assert!(a.is_at_most(&b));
        assert!(!b.is_at_most(&a));
        let mut c = a;
        c.0[0] = 0;
        c.0[1] = 5;
        // Neither dominates: not derivable in either direction.
        assert!(!c.is_at_most(&a) && !a.is_at_most(&c));
    }

    #[test]
    fn egetkey_error_codes_roundtrip() {
        for e in [
            EgetkeyError::InvalidAttribute,
            EgetkeyError::InvalidCpuSvn,
            EgetkeyError::InvalidIsvSvn,
            EgetkeyError::InvalidKeyName,
        ] {
            assert_eq!(EgetkeyError::from_code(e.code()), Some(e));
        }
        assert_eq!(EgetkeyError::InvalidIsvSvn.code(), 64);
        assert_eq!(EgetkeyError::InvalidCpuSvn.code(), 32);
    }
}
