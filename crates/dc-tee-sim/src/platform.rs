//! The "CPU": EREPORT and EGETKEY for enclaves whose identity the platform assigned.
//!
//! Pure functions of the root secret, the current CPUSVN and the caller's identity; no I/O.
//! Keys are AES-256-CMAC(root secret, key dependencies), 128 bits, like SGX's derivation
//! from its fuse keys. What enters the derivation follows the SGX rules:
//! - REPORT key: the owner's MRENCLAVE, ATTRIBUTES, MISCSELECT, CONFIGID/SVN, CET, the current
//!   CPUSVN and the requested KEYID. Only the caller's own report key is ever returned.
//! - SEAL key: MRENCLAVE and/or MRSIGNER per policy, ISVPRODID (unless NOISVPRODID), the
//!   requested ISVSVN and CPUSVN (each at most the current one), ATTRIBUTES under the mask
//!   with INIT and DEBUG always included, MISCSELECT under its mask, KEYID.

use aes::Aes256;
use cmac::{Cmac, Mac};
use dc_tee::sgx::{key_policy, EgetkeyError, KeyName, ReportMac};
use dc_tee::{
    mac, Attributes, CpuSvn, EnclaveIdentity, Key128, KeyId, KeyRequest, Measurement, Report,
    ReportData, TargetInfo,
};
use zeroize::Zeroizing;

const DOMAIN: &[u8] = b"DCTEE-SIM-EGETKEY-V1\0";

pub struct Platform {
    root: Zeroizing<[u8; 32]>,
    cpu_svn: CpuSvn,
    /// The KEYID stamped into every report, fixed per platform start like SGX's per-boot value.
    report_key_id: KeyId,
}

impl Platform {
    pub fn new(root: Zeroizing<[u8; 32]>, cpu_svn: CpuSvn, report_key_id: KeyId) -> Self {
        Self {
            root,
            cpu_svn,
            report_key_id,
        }
    }

    pub fn cpu_svn(&self) -> CpuSvn {
        self.cpu_svn
    }

    fn derive(&self, deps: &[u8]) -> Key128 {
        let mut m = <Cmac<Aes256> as Mac>::new_from_slice(self.root.as_ref()).expect("32-byte key");
        m.update(DOMAIN);
        m.update(deps);
        Key128::new(m.finalize().into_bytes().into())
    }

    fn report_key(&self, owner: &TargetInfo, key_id: &KeyId) -> Key128 {
        let mut d = Vec::with_capacity(256);
        d.extend_from_slice(&(KeyName::Report as u16).to_le_bytes());
        d.extend_from_slice(&owner.mr_enclave.0);
        d.extend_from_slice(&owner.attributes.to_bytes());
        d.extend_from_slice(&owner.misc_select.to_le_bytes());
        d.extend_from_slice(&owner.config_id.0);
        d.extend_from_slice(&owner.config_svn.to_le_bytes());
        d.push(owner.cet_attributes);
        d.extend_from_slice(&self.cpu_svn.0);
        d.extend_from_slice(&key_id.0);
        self.derive(&d)
    }

    /// EREPORT by `me` for `target`.
    pub fn ereport(&self, me: &EnclaveIdentity, target: &TargetInfo, data: &ReportData) -> Report {
        let mut r = Report {
            cpu_svn: self.cpu_svn,
            misc_select: me.misc_select,
            cet_attributes: me.cet_attributes,
            isv_ext_prod_id: dc_tee::sgx::Isv16::ZERO,
            attributes: me.attributes,
            mr_enclave: me.mr_enclave,
            mr_signer: me.mr_signer,
            config_id: me.config_id,
            isv_prod_id: me.isv_prod_id,
            isv_svn: me.isv_svn,
            config_svn: me.config_svn,
            isv_family_id: dc_tee::sgx::Isv16::ZERO,
            report_data: *data,
            key_id: self.report_key_id,
            mac: ReportMac::ZERO,
        };
        r.mac = mac::report_mac(&self.report_key(target, &self.report_key_id), &r);
        r
    }

    /// EGETKEY by `me`.
    pub fn egetkey(&self, me: &EnclaveIdentity, req: &KeyRequest) -> Result<Key128, EgetkeyError> {
        if req.key_name == KeyName::Report as u16 {
            return Ok(self.report_key(&me.target_info(), &req.key_id));
        }
        if req.key_name != KeyName::Seal as u16 {
            return Err(EgetkeyError::InvalidKeyName);
        }
        if req.key_policy & !key_policy::ALL != 0 {
            return Err(EgetkeyError::InvalidAttribute);
        }
        if req.isv_svn > me.isv_svn || req.config_svn > me.config_svn {
            return Err(EgetkeyError::InvalidIsvSvn);
        }
        if !req.cpu_svn.is_at_most(&self.cpu_svn) {
            return Err(EgetkeyError::InvalidCpuSvn);
        }
        let p = req.key_policy;
        let pick = |bit: u16, m: &Measurement| if p & bit != 0 { m.0 } else { [0u8; 32] };
        let mask = Attributes {
            flags: req.attribute_mask.flags | Attributes::INIT | Attributes::DEBUG,
            xfrm: req.attribute_mask.xfrm,
        };
        let attrs = Attributes {
            flags: me.attributes.flags & mask.flags,
            xfrm: me.attributes.xfrm & mask.xfrm,
        };
        let mut d = Vec::with_capacity(256);
        d.extend_from_slice(&(KeyName::Seal as u16).to_le_bytes());
        d.extend_from_slice(&p.to_le_bytes());
        d.extend_from_slice(&pick(key_policy::MRENCLAVE, &me.mr_enclave));
        d.extend_from_slice(&pick(key_policy::MRSIGNER, &me.mr_signer));
        let prod_id = if p & key_policy::NOISVPRODID != 0 {
            0
        } else {
            me.isv_prod_id
        };
        d.extend_from_slice(&prod_id.to_le_bytes());
        d.extend_from_slice(&req.isv_svn.to_le_bytes());
        d.extend_from_slice(&req.cpu_svn.0);
        d.extend_from_slice(&attrs.to_bytes());
        d.extend_from_slice(&(me.misc_select & req.misc_mask).to_le_bytes());
        if p & key_policy::CONFIGID != 0 {
            d.extend_from_slice(&me.config_id.0);
        }
        d.extend_from_slice(&req.config_svn.to_le_bytes());
        d.extend_from_slice(&req.key_id.0);
        Ok(self.derive(&d))
    }
}

/// A [`dc_tee::Tee`] for one enclave identity, answered by an in-process [`Platform`]: for
/// protocol tests and benchmarks that should not pay for channel round trips. Like the whole
/// software platform, it is no security boundary.
pub struct InProcessTee {
    platform: std::sync::Arc<Platform>,
    identity: EnclaveIdentity,
}

impl InProcessTee {
    pub fn new(platform: std::sync::Arc<Platform>, identity: EnclaveIdentity) -> Self {
        Self { platform, identity }
    }
}

impl dc_tee::Tee for InProcessTee {
    fn target_info(&self) -> Result<TargetInfo, dc_tee::TeeError> {
        Ok(self.identity.target_info())
    }

    fn report(
        &self,
        target: &TargetInfo,
        report_data: &ReportData,
    ) -> Result<Report, dc_tee::TeeError> {
        Ok(self.platform.ereport(&self.identity, target, report_data))
    }

    fn get_key(&self, request: &KeyRequest) -> Result<Key128, dc_tee::TeeError> {
        Ok(self.platform.egetkey(&self.identity, request)?)
    }
}

/// An identity for tests: `tag` fills MRENCLAVE, `signer` fills MRSIGNER.
pub fn test_identity(tag: u8, signer: u8, isv_svn: u16, debug: bool) -> EnclaveIdentity {
    EnclaveIdentity {
        mr_enclave: Measurement([tag; 32]),
        mr_signer: Measurement([signer; 32]),
        isv_prod_id: 1,
        isv_svn,
        attributes: Attributes {
            flags: Attributes::INIT
                | Attributes::MODE64BIT
                | if debug { Attributes::DEBUG } else { 0 },
            xfrm: 3,
        },
        misc_select: 0,
        config_id: dc_tee::sgx::ConfigId::ZERO,
        config_svn: 0,
        cet_attributes: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dc_tee::seal::{seal_key_request, SealPolicy};
    use dc_tee::sgx::ConfigId;

    fn platform(cpusvn: u8) -> Platform {
        Platform::new(
            Zeroizing::new([5; 32]),
            CpuSvn([cpusvn; 16]),
            KeyId([6; 32]),
        )
    }

    fn enclave(mre: u8, mrs: u8, svn: u16, debug: bool) -> EnclaveIdentity {
        EnclaveIdentity {
            mr_enclave: Measurement([mre; 32]),
            mr_signer: Measurement([mrs; 32]),
            isv_prod_id: 1,
            isv_svn: svn,
            attributes: Attributes {
                flags: Attributes::INIT
                    | Attributes::MODE64BIT
                    | if debug { Attributes::DEBUG } else { 0 },
                xfrm: 3,
            },
            misc_select: 0,
            config_id: ConfigId::ZERO,
            config_svn: 0,
            cet_attributes: 0,
        }
    }

    fn verify(p: &Platform, me: &EnclaveIdentity, r: &Report) -> bool {
        let k = p.egetkey(me, &KeyRequest::report_key(r.key_id)).unwrap();
        mac::report_mac_matches(&k, r)
    }

    #[test]
    fn report_verifies_only_at_its_target_and_unaltered() {
        let p = platform(1);
        let (a, b, c) = (
            enclave(1, 9, 1, false),
            enclave(2, 9, 1, false),
            enclave(3, 9, 1, false),
        );
        let r = p.ereport(&a, &b.target_info(), &ReportData([7; 64]));
        assert!(verify(&p, &b, &r));
        assert!(!verify(&p, &c, &r));
        assert!(
            !verify(&p, &a, &r),
            "not even the maker can verify a report for someone else"
        );
        let bytes = r.to_bytes();
        for i in 0..Report::BODY_LEN * 8 {
            let mut x = bytes;
            x[i / 8] ^= 1 << (i % 8);
            if let Ok(alt) = Report::from_bytes(&x) {
                assert!(!verify(&p, &b, &alt), "bit {i} flip verified");
            }
        }
        // Another platform (root secret) cannot verify it.
        let other = Platform::new(Zeroizing::new([6; 32]), CpuSvn([1; 16]), KeyId([6; 32]));
        assert!(!verify(&other, &b, &r));
    }

    #[test]
    fn seal_key_rules() {
        let p = platform(2);
        let v2 = enclave(1, 9, 2, false);
        let mut me = p.ereport(&v2, &v2.target_info(), &ReportData::ZERO);
        let req = seal_key_request(SealPolicy::MrSigner, &me, KeyId([1; 32]));
        let k = p.egetkey(&v2, &req).unwrap();
        // Higher ISVSVN of the same signer: same key. Lower: refused.
        let v3 = enclave(3, 9, 3, false);
        assert_eq!(p.egetkey(&v3, &req).unwrap().expose(), k.expose());
        assert_eq!(
            p.egetkey(&enclave(4, 9, 1, false), &req).unwrap_err(),
            EgetkeyError::InvalidIsvSvn
        );
        // Other signer: other key. Debug build: other key.
        assert_ne!(
            p.egetkey(&enclave(3, 8, 3, false), &req).unwrap().expose(),
            k.expose()
        );
        assert_ne!(
            p.egetkey(&enclave(1, 9, 2, true), &req).unwrap().expose(),
            k.expose()
        );
        // Even with DEBUG masked out by the request, it is still in the derivation.
        let mut no_debug_mask = req;
        no_debug_mask.attribute_mask.flags = 0;
        assert_ne!(
            p.egetkey(&v2, &no_debug_mask).unwrap().expose(),
            p.egetkey(&enclave(1, 9, 2, true), &no_debug_mask)
                .unwrap()
                .expose()
        );
        // MRENCLAVE policy: another build of the same signer gets another key.
        let req_e = seal_key_request(SealPolicy::MrEnclave, &me, KeyId([1; 32]));
        assert_ne!(
            p.egetkey(&v3, &req_e).unwrap().expose(),
            p.egetkey(&v2, &req_e).unwrap().expose()
        );
        // CPUSVN: older derivable on a newer platform, never the reverse.
        let newer = platform(3);
        assert_eq!(newer.egetkey(&v2, &req).unwrap().expose(), k.expose());
        me.cpu_svn = CpuSvn([3; 16]);
        let req_new = seal_key_request(SealPolicy::MrSigner, &me, KeyId([1; 32]));
        assert_eq!(
            p.egetkey(&v2, &req_new).unwrap_err(),
            EgetkeyError::InvalidCpuSvn
        );
        // Unknown key name and reserved policy bits.
        let mut bad = req;
        bad.key_name = 7;
        assert_eq!(
            p.egetkey(&v2, &bad).unwrap_err(),
            EgetkeyError::InvalidKeyName
        );
        bad = req;
        bad.key_policy = 0x40;
        assert_eq!(
            p.egetkey(&v2, &bad).unwrap_err(),
            EgetkeyError::InvalidAttribute
        );
    }
}
