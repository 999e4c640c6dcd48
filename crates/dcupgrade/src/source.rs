//! Release sources → upgrade candidates.
//!
//! - The local feed carries threshold-signed records: version, EnclaveID, ISVSVN, artifact
//!   digest and size are all signed.
//! - DCChain carries `DcProgram` (URLs, EnclaveID, version) and `EnclaveIds` (legacy
//!   signatures over the EnclaveID only). The RPC node is not trusted, so only the EnclaveID is
//!   authenticated there; the artifact has no signed digest and is bounded by a size cap, and
//!   the version and ISVSVN are taken from the *measured* manifest once the bundle's
//!   measurement matches the signed EnclaveID (and must agree with what the chain says).

use dc_chain::{DcProgramInfo, EnclaveIdEntry, Observation};
use dc_handover::Version;
use dc_release::{Committee, VerifiedRecord};
use dc_tee::Measurement;

/// Artifact size cap when no signed size is known (chain releases).
pub const MAX_UNSIGNED_ARTIFACT: u64 = 512 * 1024 * 1024;

/// What to download and how to check it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetch {
    pub urls: Vec<String>,
    pub sha256: Option<[u8; 32]>,
    /// Exact size if signed, else the cap.
    pub size: u64,
    pub size_is_exact: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Signed (feed) or claimed by the chain (then checked against the measured manifest).
    pub version: Version,
    pub mr_enclave: Measurement,
    /// Signed (feed); for chain releases it comes from the measured manifest.
    pub isv_svn: Option<u16>,
    pub fetch: Fetch,
    /// The signed record, for the node to present as evidence (feed releases).
    pub record_json: Option<Vec<u8>>,
    /// Chain releases: the `EnclaveIds` signatures that authorize the EnclaveID. With the
    /// measured manifest they make the release's evidence for the holder and the node.
    pub legacy_signatures: Vec<String>,
    /// Where it came from, for the journal and operators.
    pub source: String,
}

impl Candidate {
    pub fn from_record(v: &VerifiedRecord, json: Vec<u8>, source: String) -> Option<Self> {
        let a = v.record.artifact.as_ref()?;
        Some(Self {
            version: v.version,
            mr_enclave: v.mr_enclave,
            isv_svn: Some(v.record.isv_svn),
            fetch: Fetch {
                urls: a.urls.clone(),
                sha256: v.artifact_sha256,
                size: a.size,
                size_is_exact: true,
            },
            record_json: Some(json),
            legacy_signatures: Vec::new(),
            source,
        })
    }
}

fn url(b: &[u8], what: &str) -> Result<Option<String>, String> {
    if b.is_empty() {
        return Ok(None);
    }
    let s = std::str::from_utf8(b).map_err(|_| format!("{what} is not UTF-8"))?;
    // The RPC node is untrusted: it may name remote URLs only, never local files.
    if s.len() > 2048 || !(s.starts_with("http://") || s.starts_with("https://")) {
        return Err(format!("{what} {s:?} is not an http(s):// URL"));
    }
    Ok(Some(s.to_string()))
}

/// What the chain asks for at one finalized block, checked against the committee. `Ok(None)`
/// when no program is published.
pub fn evaluate_chain(
    obs: &Observation,
    committee: &Committee,
    revoked: &[Measurement],
) -> Result<Option<Candidate>, String> {
    let program: &DcProgramInfo = match &obs.program {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(None),
        Err(e) => return Err(format!("DcProgram: {e}")),
    };
    let entries: &[EnclaveIdEntry] = match &obs.enclave_ids {
        Ok(Some(e)) => e,
        Ok(None) => &[],
        Err(e) => return Err(format!("EnclaveIds: {e}")),
    };
    let version_text = std::str::from_utf8(&program.version)
        .map_err(|_| "DcProgram version is not UTF-8".to_string())?;
    let version: Version = version_text.parse()?;
    // One signature per committee member, each verified once: repeats on the chain neither
    // count twice nor crowd out other members' signatures in the evidence passed on.
    let (mr_enclave, signed) = dc_release::legacy::authorize_with_signatures(
        committee,
        &program.enclave_id,
        entries
            .iter()
            .map(|e| (e.enclave_id.as_slice(), e.signature.as_slice())),
    )
    .map_err(|e| {
        format!(
            "EnclaveID {} is not authorized: {e}",
            DcProgramInfo::text(&program.enclave_id)
        )
    })?;
    if revoked.contains(&mr_enclave) {
        return Err(format!(
            "EnclaveID {mr_enclave} has been revoked by the committee"
        ));
    }
    let urls: Vec<String> = [
        url(&program.origin_url, "origin_url")?,
        url(&program.mirror_url, "mirror_url")?,
    ]
    .into_iter()
    .flatten()
    .collect();
    if urls.is_empty() {
        return Err("DcProgram names no download URL".into());
    }
    Ok(Some(Candidate {
        version,
        mr_enclave,
        isv_svn: None,
        fetch: Fetch {
            urls,
            sha256: None,
            size: MAX_UNSIGNED_ARTIFACT,
            size_is_exact: false,
        },
        record_json: None,
        legacy_signatures: signed
            .values()
            .filter_map(|sig| String::from_utf8(sig.to_vec()).ok())
            .take(dc_release::evidence::MAX_LEGACY_SIGNATURES)
            .collect(),
        source: format!(
            "DCChain block #{} {} ({} committee signature(s))",
            obs.block_number,
            obs.block_hash,
            signed.len()
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dc_release::committee::CommitteeSigner;

    fn obs(program: Option<DcProgramInfo>, entries: Vec<EnclaveIdEntry>) -> Observation {
        Observation {
            endpoint: "ws://x".into(),
            block_hash: "0x00".into(),
            block_number: 5,
            program: Ok(program),
            enclave_ids: Ok(Some(entries)),
            at: std::time::Instant::now(),
        }
    }

    fn program(id: &Measurement, version: &str) -> DcProgramInfo {
        DcProgramInfo {
            origin_url: b"http://127.0.0.1:9/a.tar".to_vec(),
            mirror_url: b"".to_vec(),
            enclave_id: id.to_string().into_bytes(),
            version: version.as_bytes().to_vec(),
            mirror_cids: None,
        }
    }

    #[test]
    fn chain_release_needs_a_committee_signature_over_its_enclave_id() {
        let s = CommitteeSigner::from_seed([1; 32]);
        let c = Committee::new([s.public()], 1).unwrap();
        let m = Measurement([0xab; 32]);
        let entry = EnclaveIdEntry {
            block: 1,
            enclave_id: m.to_string().into_bytes(),
            signature: dc_release::legacy::sign(&s, &m).into_bytes(),
        };
        let cand = evaluate_chain(
            &obs(Some(program(&m, "0.2.1")), vec![entry.clone()]),
            &c,
            &[],
        )
        .unwrap()
        .unwrap();
        assert_eq!(cand.mr_enclave, m);
        assert_eq!(cand.version, Version::new(0, 2, 1));
        assert_eq!(
            cand.fetch.urls,
            vec!["http://127.0.0.1:9/a.tar".to_string()]
        );
        assert!(cand.fetch.sha256.is_none() && !cand.fetch.size_is_exact);
        // Unsigned, revoked, bad version, no program.
        assert!(evaluate_chain(&obs(Some(program(&m, "0.2.1")), vec![]), &c, &[]).is_err());
        assert!(evaluate_chain(
            &obs(Some(program(&m, "0.2.1")), vec![entry.clone()]),
            &c,
            &[m]
        )
        .unwrap_err()
        .contains("revoked"));
        assert!(evaluate_chain(
            &obs(Some(program(&m, "v0.2")), vec![entry.clone()]),
            &c,
            &[]
        )
        .is_err());
        assert_eq!(
            evaluate_chain(&obs(None, vec![entry.clone()]), &c, &[]),
            Ok(None)
        );
        // The chain may not point the agent at local files.
        let mut local = program(&m, "0.2.1");
        local.origin_url = b"file:///var/lib/dcnode/keys/x.sealed".to_vec();
        assert!(evaluate_chain(&obs(Some(local), vec![entry]), &c, &[])
            .unwrap_err()
            .contains("not an http(s):// URL"));
    }

    #[test]
    fn repeated_signatures_neither_count_twice_nor_crowd_out_others() {
        let (a, b) = (
            CommitteeSigner::from_seed([1; 32]),
            CommitteeSigner::from_seed([2; 32]),
        );
        let c = Committee::new([a.public(), b.public()], 2).unwrap();
        let m = Measurement([0xab; 32]);
        let entry = |s: &CommitteeSigner| EnclaveIdEntry {
            block: 1,
            enclave_id: m.to_string().into_bytes(),
            signature: dc_release::legacy::sign(s, &m).into_bytes(),
        };
        // Member A many times: still one member, below the threshold of two.
        let many_a = vec![entry(&a); 3 * dc_release::evidence::MAX_LEGACY_SIGNATURES];
        assert!(evaluate_chain(&obs(Some(program(&m, "1.0.0")), many_a.clone()), &c, &[]).is_err());
        // Then member B: authorized, and the evidence carries one signature of each.
        let mut entries = many_a;
        entries.push(entry(&b));
        let cand = evaluate_chain(&obs(Some(program(&m, "1.0.0")), entries), &c, &[])
            .unwrap()
            .unwrap();
        let mut sigs = cand.legacy_signatures.clone();
        sigs.sort();
        let mut expected = vec![
            dc_release::legacy::sign(&a, &m),
            dc_release::legacy::sign(&b, &m),
        ];
        expected.sort();
        assert_eq!(sigs, expected);
    }
}
