//! Release detection latency on DCChain: from `dev_newBlock` returning (the block carrying a
//! new signed DcProgram is finalized) to the agent journaling its decision to upgrade, over
//! consecutive upgrades v1 → v2 → … on a real Substrate runtime (chopsticks). Also reports the
//! whole upgrade. Run with `scripts/bench-detection` (it builds the release binaries first).

use std::time::Duration;

use dc_chain::storage::{self, encode, DcProgramInfo, EnclaveIdEntry};
use dc_chain::testnet::Testnet;
use dc_lab::{Bins, Lab};
use dcupgrade::agent::now_ms;

fn main() {
    let runs: u32 = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let net = Testnet::start(dir.path()).await.expect("chopsticks");
        let bins = Bins::locate(&std::env::current_exe().expect("exe"))
            .expect("release binaries (scripts/bench-detection builds them)");
        let mut lab = Lab::start(&dir.path().join("lab"), bins).expect("lab");
        let v1 = lab.build_node("1.0.0", 1, "", &[]).expect("v1");
        lab.start_agent_with(&v1, Duration::from_secs(3600), false, &[net.url()])
            .expect("agent");
        lab.wait_serving("1.0.0", Duration::from_secs(60))
            .await
            .expect("v1 serving");
        let (mut detect, mut total) = (Vec::new(), Vec::new());
        for i in 2..2 + runs {
            let version = format!("{i}.0.0");
            let r = lab.build_node(&version, i as u16, "", &[]).expect("bundle");
            let program = DcProgramInfo {
                origin_url: lab.artifact_url(&r).into_bytes(),
                mirror_url: Vec::new(),
                enclave_id: r.mr_enclave.to_string().into_bytes(),
                version: version.clone().into_bytes(),
                mirror_cids: Some(vec![]),
            };
            let entry = EnclaveIdEntry {
                block: i,
                enclave_id: r.mr_enclave.to_string().into_bytes(),
                signature: lab.legacy_signature(&r.mr_enclave).into_bytes(),
            };
            net.set_storage_and_new_block(&[
                (
                    storage::dc_program_key(),
                    Some(encode::dc_program(&program)),
                ),
                (
                    storage::enclave_ids_key(),
                    Some(encode::enclave_ids(&[entry])),
                ),
            ])
            .await
            .expect("new block");
            let block_at = now_ms();
            let s = lab
                .wait_serving(&version, Duration::from_secs(60))
                .await
                .expect("upgrade");
            let st = s.state.expect("state");
            let cand = st
                .timeline
                .iter()
                .find(|e| e.phase == "candidate")
                .expect("candidate")
                .at_ms;
            let done = st.timeline.last().expect("timeline").at_ms;
            detect.push(cand.saturating_sub(block_at));
            total.push(done.saturating_sub(block_at));
            println!(
                "{version}: detected after {} ms, committed after {} ms",
                cand.saturating_sub(block_at),
                done.saturating_sub(block_at)
            );
        }
        for (name, mut v) in [
            ("detection (dev_newBlock -> decision)", detect),
            ("new block -> upgrade committed", total),
        ] {
            v.sort_unstable();
            println!(
                "{name}: median {} ms, max {} ms (n={})",
                v[v.len() / 2],
                v[v.len() - 1],
                v.len()
            );
        }
    });
}
