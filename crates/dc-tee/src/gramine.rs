//! The SGX backend, for enclaves running under Gramine-SGX.
//!
//! - Own TARGETINFO: `/dev/attestation/my_target_info` (512 bytes).
//! - EREPORT and EGETKEY: the ENCLU instruction (leaf 0 and 1) with 512-byte aligned
//!   TARGETINFO/KEYREQUEST/REPORT buffers, as Gramine's own attestation test does. EREPORT
//!   can also go through Gramine's files (`target_info`, `user_report_data`, `report`).
//! - Report verification and sealing are the [`Tee`] trait's shared code: EGETKEY(REPORT,
//!   the report's KEYID) + the CMAC check; seal keys from the KEYREQUEST stored in each blob,
//!   so a CPUSVN increase is survivable (unlike `/dev/attestation/keys/_sgx_mrenclave`, which
//!   derives with the *current* CPUSVN).
//!
//! ENCLU raises #UD (SIGILL) outside an enclave. The only way to obtain [`Enclu`] is
//! [`SgxTee::open`], which first finds `/dev/attestation` — present only inside Gramine-SGX —
//! so outside an enclave the result is a clear error, never a crash. Everything but the
//! instruction itself goes through the [`Instructions`] seam and is tested without SGX.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::sgx::{EgetkeyError, KeyRequest, Report, ReportData, TargetInfo};
use crate::{Key128, Tee, TeeError};

pub const ATTESTATION_DIR: &str = "/dev/attestation";

/// What the CPU provides.
pub trait Instructions: Send + Sync {
    fn ereport(&self, target: &TargetInfo, data: &ReportData) -> Result<Report, TeeError>;
    fn egetkey(&self, request: &KeyRequest) -> Result<Key128, TeeError>;
}

/// A buffer aligned as ENCLU requires for TARGETINFO, KEYREQUEST and REPORT (512 bytes).
#[repr(C, align(512))]
pub struct Align512<const N: usize>(pub [u8; N]);
/// REPORTDATA must be 128-byte aligned.
#[repr(C, align(128))]
pub struct Align128(pub [u8; 64]);
/// The EGETKEY output must be 16-byte aligned.
#[repr(C, align(16))]
pub struct Align16(pub [u8; 16]);

/// EGETKEY's status (EAX) as a result.
pub fn egetkey_status(code: u32) -> Result<(), TeeError> {
    match code {
        0 => Ok(()),
        c => Err(EgetkeyError::from_code(c)
            .map(TeeError::Egetkey)
            .unwrap_or_else(|| TeeError::Refused(format!("EGETKEY failed with SGX error {c}")))),
    }
}

/// The real instructions. Private constructor: only [`SgxTee::open`] makes one.
pub struct Enclu(());

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
impl Instructions for Enclu {
    fn ereport(&self, target: &TargetInfo, data: &ReportData) -> Result<Report, TeeError> {
        let ti = Align512::<512>(target.to_bytes());
        let rd = Align128(data.0);
        let mut out = Align512::<432>([0u8; 432]);
        // SAFETY: we are inside an SGX enclave (checked by `SgxTee::open`); the buffers have
        // the alignment and sizes EREPORT requires and live across the instruction. RBX is
        // reserved by the compiler, so it is swapped in and restored around ENCLU.
        unsafe {
            core::arch::asm!(
                "xchg {ti}, rbx",
                "enclu",
                "mov rbx, {ti}",
                ti = inout(reg) ti.0.as_ptr() => _,
                inout("eax") 0u32 => _,
                in("rcx") rd.0.as_ptr(),
                in("rdx") out.0.as_mut_ptr(),
                options(nostack),
            );
        }
        Ok(Report::from_bytes(&out.0)?)
    }

    fn egetkey(&self, request: &KeyRequest) -> Result<Key128, TeeError> {
        let req = Align512::<512>(request.to_bytes());
        let mut key = Align16([0u8; 16]);
        let status: u32;
        // SAFETY: as for EREPORT; EGETKEY reports failure in EAX instead of faulting.
        unsafe {
            core::arch::asm!(
                "xchg {req}, rbx",
                "enclu",
                "mov rbx, {req}",
                req = inout(reg) req.0.as_ptr() => _,
                inout("eax") 1u32 => status,
                in("rcx") key.0.as_mut_ptr(),
                options(nostack),
            );
        }
        egetkey_status(status)?;
        let k = Key128::new(key.0);
        zeroize::Zeroize::zeroize(&mut key.0);
        Ok(k)
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
impl Instructions for Enclu {
    fn ereport(&self, _: &TargetInfo, _: &ReportData) -> Result<Report, TeeError> {
        Err(TeeError::Unavailable(
            "the SGX backend needs x86_64 Linux".into(),
        ))
    }
    fn egetkey(&self, _: &KeyRequest) -> Result<Key128, TeeError> {
        Err(TeeError::Unavailable(
            "the SGX backend needs x86_64 Linux".into(),
        ))
    }
}

/// The SGX [`Tee`].
pub struct SgxTee<I = Enclu> {
    dir: PathBuf,
    me: TargetInfo,
    instructions: I,
}

fn read_target_info(dir: &Path) -> Result<TargetInfo, TeeError> {
    let p = dir.join("my_target_info");
    let b = std::fs::read(&p).map_err(|e| {
        TeeError::Unavailable(format!(
            "{}: {e}; not inside a Gramine-SGX enclave (use the software platform, dctee-sim, elsewhere)",
            p.display()
        ))
    })?;
    Ok(TargetInfo::from_bytes(&b)?)
}

impl SgxTee<Enclu> {
    /// Opens the backend inside a Gramine-SGX enclave.
    pub fn open() -> Result<Self, TeeError> {
        let dir = PathBuf::from(ATTESTATION_DIR);
        let me = read_target_info(&dir)?;
        Ok(Self {
            dir,
            me,
            instructions: Enclu(()),
        })
    }
}

impl<I: Instructions> SgxTee<I> {
    /// With other instructions and attestation directory (tests, or another loader).
    pub fn with_instructions(dir: &Path, instructions: I) -> Result<Self, TeeError> {
        Ok(Self {
            dir: dir.to_path_buf(),
            me: read_target_info(dir)?,
            instructions,
        })
    }

    /// EREPORT through Gramine's files: write `target_info` and `user_report_data`, read
    /// `report`. For loaders where ENCLU is not usable directly.
    pub fn report_via_files(
        &self,
        target: &TargetInfo,
        data: &ReportData,
    ) -> Result<Report, TeeError> {
        let io = |what: &str, e: std::io::Error| {
            TeeError::Unavailable(format!("{}/{what}: {e}", self.dir.display()))
        };
        std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("target_info"))
            .and_then(|mut f| f.write_all(&target.to_bytes()))
            .map_err(|e| io("target_info", e))?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("user_report_data"))
            .and_then(|mut f| f.write_all(&data.0))
            .map_err(|e| io("user_report_data", e))?;
        let b = std::fs::read(self.dir.join("report")).map_err(|e| io("report", e))?;
        Ok(Report::from_bytes(&b)?)
    }
}

impl<I: Instructions> Tee for SgxTee<I> {
    fn target_info(&self) -> Result<TargetInfo, TeeError> {
        Ok(self.me)
    }

    fn report(&self, target: &TargetInfo, report_data: &ReportData) -> Result<Report, TeeError> {
        self.instructions.ereport(target, report_data)
    }

    fn get_key(&self, request: &KeyRequest) -> Result<Key128, TeeError> {
        self.instructions.egetkey(request)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::sgx::{Attributes, ConfigId, KeyId, Measurement};
    use crate::SealPolicy;

    fn me() -> TargetInfo {
        TargetInfo {
            mr_enclave: Measurement([0x42; 32]),
            attributes: Attributes {
                flags: Attributes::INIT | Attributes::MODE64BIT,
                xfrm: 3,
            },
            cet_attributes: 0,
            config_svn: 0,
            misc_select: 0,
            config_id: ConfigId::ZERO,
        }
    }

    fn fake_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("my_target_info"), me().to_bytes()).unwrap();
        d
    }

    /// Instructions that record the requests they get and derive keys from them.
    #[derive(Default)]
    struct Recorder {
        requests: Mutex<Vec<KeyRequest>>,
        fail_with: Option<u32>,
    }

    impl Instructions for Recorder {
        fn ereport(&self, target: &TargetInfo, data: &ReportData) -> Result<Report, TeeError> {
            let mut r = Report::from_bytes(&[0u8; 432]).unwrap();
            r.mr_enclave = me().mr_enclave;
            r.report_data = *data;
            r.config_id = target.config_id;
            Ok(r)
        }
        fn egetkey(&self, request: &KeyRequest) -> Result<Key128, TeeError> {
            egetkey_status(self.fail_with.unwrap_or(0))?;
            self.requests.lock().unwrap().push(*request);
            let mut k = [0u8; 16];
            k.copy_from_slice(&crate::mac::cmac_aes128(
                &Key128::new([7; 16]),
                &request.to_bytes(),
            ));
            Ok(Key128::new(k))
        }
    }

    #[test]
    fn buffers_have_the_alignment_enclu_requires() {
        assert_eq!(std::mem::align_of::<Align512<512>>(), 512);
        assert_eq!(std::mem::align_of::<Align512<432>>(), 512);
        assert_eq!(std::mem::align_of::<Align128>(), 128);
        assert_eq!(std::mem::align_of::<Align16>(), 16);
        let on_stack = Align512::<512>([0; 512]);
        let on_heap = Box::new(Align512::<432>([0; 432]));
        let rd = Align128([0; 64]);
        assert_eq!(on_stack.0.as_ptr() as usize % 512, 0);
        assert_eq!(on_heap.0.as_ptr() as usize % 512, 0);
        assert_eq!(rd.0.as_ptr() as usize % 128, 0);
    }

    #[test]
    fn outside_an_enclave_opening_is_a_clear_error_not_sigill() {
        let d = tempfile::tempdir().unwrap();
        let e = SgxTee::with_instructions(d.path(), Recorder::default())
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("not inside a Gramine-SGX enclave"),
            "{e}"
        );
        std::fs::write(d.path().join("my_target_info"), [0u8; 100]).unwrap();
        assert!(matches!(
            SgxTee::with_instructions(d.path(), Recorder::default()),
            Err(TeeError::Layout(_))
        ));
        // On this machine (no SGX) the real backend refuses to open.
        if !Path::new(ATTESTATION_DIR).exists() {
            assert!(matches!(SgxTee::open(), Err(TeeError::Unavailable(_))));
        }
    }

    #[test]
    fn egetkey_status_codes_map_to_sgx_errors() {
        assert!(egetkey_status(0).is_ok());
        assert!(matches!(
            egetkey_status(64),
            Err(TeeError::Egetkey(EgetkeyError::InvalidIsvSvn))
        ));
        assert!(matches!(
            egetkey_status(32),
            Err(TeeError::Egetkey(EgetkeyError::InvalidCpuSvn))
        ));
        assert!(matches!(
            egetkey_status(256),
            Err(TeeError::Egetkey(EgetkeyError::InvalidKeyName))
        ));
        assert!(matches!(
            egetkey_status(2),
            Err(TeeError::Egetkey(EgetkeyError::InvalidAttribute))
        ));
        assert!(matches!(egetkey_status(7), Err(TeeError::Refused(_))));
    }

    #[test]
    fn sealing_asks_egetkey_for_the_stored_request_and_verification_for_the_report_keyid() {
        let d = fake_dir();
        let tee = SgxTee::with_instructions(d.path(), Recorder::default()).unwrap();
        assert_eq!(tee.target_info().unwrap(), me());
        let blob = tee.seal(SealPolicy::MrEnclave, b"x", b"keys").unwrap();
        assert_eq!(
            &tee.unseal(SealPolicy::MrEnclave, &blob.0, b"x").unwrap()[..],
            b"keys"
        );
        let reqs = tee.instructions.requests.lock().unwrap().clone();
        assert_eq!(reqs.len(), 2);
        assert_eq!(
            reqs[0], reqs[1],
            "unseal re-derives with exactly the stored KEYREQUEST"
        );
        assert_eq!(reqs[0].key_name, 4);
        assert_eq!(reqs[0].key_policy, crate::sgx::key_policy::MRENCLAVE);
        // Report verification asks for the REPORT key with the report's KEYID.
        let mut r = tee.report(&me(), &ReportData([1; 64])).unwrap();
        r.key_id = KeyId([9; 32]);
        let _ = tee.verify_report(&r);
        let last = *tee.instructions.requests.lock().unwrap().last().unwrap();
        assert_eq!((last.key_name, last.key_id), (3, KeyId([9; 32])));
    }

    #[test]
    fn egetkey_failures_surface_as_errors_and_leave_blobs_alone() {
        let d = fake_dir();
        let good = SgxTee::with_instructions(d.path(), Recorder::default()).unwrap();
        let blob = good.seal(SealPolicy::MrSigner, b"", b"k").unwrap();
        let failing = SgxTee::with_instructions(
            d.path(),
            Recorder {
                fail_with: Some(32),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(matches!(
            failing.unseal(SealPolicy::MrSigner, &blob.0, b""),
            Err(TeeError::Egetkey(EgetkeyError::InvalidCpuSvn))
        ));
    }

    #[test]
    fn a_planted_blob_with_a_weaker_key_request_never_reaches_egetkey() {
        let d = fake_dir();
        let tee = SgxTee::with_instructions(d.path(), Recorder::default()).unwrap();
        // What a host-built enclave could make: KEYPOLICY 0 and no attribute binding, so it
        // derives the same key as any enclave of the product would.
        let me = tee.self_report().unwrap();
        let mut weak = crate::seal::seal_key_request(SealPolicy::MrEnclave, &me, KeyId([1; 32]));
        weak.key_policy = 0;
        weak.attribute_mask = Attributes::default();
        let key = tee.instructions.egetkey(&weak).unwrap();
        let blob = crate::seal::seal_with_key(&weak, &key, b"", b"evil keys").unwrap();
        let before = tee.instructions.requests.lock().unwrap().len();
        match tee.unseal(SealPolicy::MrEnclave, &blob.0, b"") {
            Err(TeeError::Seal(crate::seal::SealError::UnexpectedKeyRequest(m))) => {
                assert!(m.contains("KEYPOLICY"), "{m}")
            }
            other => panic!("planted blob not refused: {other:?}"),
        }
        assert_eq!(
            tee.instructions.requests.lock().unwrap().len(),
            before,
            "the planted request went to EGETKEY"
        );
    }

    #[test]
    fn ereport_through_gramine_files() {
        let d = fake_dir();
        for f in ["target_info", "user_report_data"] {
            std::fs::write(d.path().join(f), []).unwrap();
        }
        let mut canned = Report::from_bytes(&[0u8; 432]).unwrap();
        canned.report_data = ReportData([3; 64]);
        std::fs::write(d.path().join("report"), canned.to_bytes()).unwrap();
        let tee = SgxTee::with_instructions(d.path(), Recorder::default()).unwrap();
        let target = me();
        let r = tee.report_via_files(&target, &ReportData([3; 64])).unwrap();
        assert_eq!(r, canned);
        assert_eq!(
            std::fs::read(d.path().join("target_info")).unwrap(),
            target.to_bytes().to_vec()
        );
        assert_eq!(
            std::fs::read(d.path().join("user_report_data")).unwrap(),
            vec![3u8; 64]
        );
        std::fs::write(d.path().join("report"), [0u8; 10]).unwrap();
        assert!(tee.report_via_files(&target, &ReportData([3; 64])).is_err());
    }
}
