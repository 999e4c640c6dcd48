//! `dcupgrade check --chain ws://HOST:PORT`: what DCChain says now, and what the agent would
//! do about it — using the agent's own evaluation code.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use dc_chain::{DcProgramInfo, Event};
use dc_handover::Version;
use dc_release::{Committee, CommitteeKey};
use dcupgrade::source::evaluate_chain;
use serde_json::json;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// DCChain RPC endpoint (repeatable, tried in order).
    #[arg(long = "chain", required = true)]
    chain: Vec<String>,
    /// Committee public key, multibase base32 (repeatable).
    #[arg(long = "committee-key")]
    committee_keys: Vec<String>,
    #[arg(long, default_value_t = 1)]
    threshold: usize,
    /// Take the committee from an enclave manifest's [trust] table (e.g. the agent's).
    #[arg(long, conflicts_with = "committee_keys")]
    manifest: Option<PathBuf>,
    /// The installed node version, to decide between upgrade and up to date.
    #[arg(long)]
    current: Option<String>,
    #[arg(long)]
    json: bool,
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
}

pub async fn run(a: CheckArgs) -> Result<()> {
    let committee = match &a.manifest {
        Some(p) => {
            let m = dc_bundle::Manifest::parse(
                &std::fs::read(p).with_context(|| p.display().to_string())?,
            )?;
            Committee::from_trust_roots(&m.trust)?
        }
        None => {
            if a.committee_keys.is_empty() {
                bail!("give the committee: --committee-key KEY (repeatable) or --manifest enclave.toml");
            }
            let keys = a
                .committee_keys
                .iter()
                .map(|k| CommitteeKey::parse(k))
                .collect::<Result<Vec<_>, _>>()?;
            Committee::new(keys, a.threshold)?
        }
    };
    let current: Option<Version> = a
        .current
        .as_deref()
        .map(|v| v.parse().map_err(|e: String| anyhow!(e)))
        .transpose()?;
    let mut rx = dc_chain::watcher::spawn(dc_chain::WatcherConfig::new(a.chain.clone()));
    let end = tokio::time::Instant::now() + Duration::from_secs(a.timeout_secs);
    let mut problems = Vec::new();
    let obs = loop {
        match tokio::time::timeout_at(end, rx.recv()).await {
            Ok(Some(Event::Observed(o))) => break *o,
            Ok(Some(Event::Disconnected { endpoint, reason })) => {
                problems.push(format!("{endpoint}: {reason}"))
            }
            Ok(Some(Event::Syncing { endpoint })) => problems.push(format!("{endpoint}: syncing")),
            Ok(Some(Event::Connected { .. })) => {}
            Ok(None) | Err(_) => bail!(
                "no finalized state from {:?} within {}s: {}",
                a.chain,
                a.timeout_secs,
                problems.join("; ")
            ),
        }
    };

    let entries: Vec<serde_json::Value> = match &obs.enclave_ids {
        Ok(Some(es)) => es
            .iter()
            .map(|e| {
                let signer = dc_release::legacy::signer_of(&committee, &e.enclave_id, &e.signature);
                json!({
                    "block": e.block,
                    "enclave_id": DcProgramInfo::text(&e.enclave_id),
                    "signature": DcProgramInfo::text(&e.signature),
                    "valid": signer.is_some(),
                    "signed_by": signer.map(|k| k.to_text()),
                })
            })
            .collect(),
        _ => vec![],
    };
    let decision = match evaluate_chain(&obs, &committee, &[]) {
        Ok(None) => "no DcProgram published".to_string(),
        Err(e) => format!("refused because {e}"),
        Ok(Some(c)) => match current {
            Some(cur) if c.version > cur => format!("upgrade to {} ({})", c.version, c.mr_enclave),
            Some(cur) if c.version == cur => format!("up to date ({cur})"),
            Some(cur) => format!(
                "refused because {} is lower than the installed {cur}",
                c.version
            ),
            None => format!(
                "authorized release {} ({}); give --current to compare",
                c.version, c.mr_enclave
            ),
        },
    };
    let program = match &obs.program {
        Ok(Some(p)) => json!({
            "origin_url": DcProgramInfo::text(&p.origin_url),
            "mirror_url": DcProgramInfo::text(&p.mirror_url),
            "enclave_id": DcProgramInfo::text(&p.enclave_id),
            "version": DcProgramInfo::text(&p.version),
            "mirror_cids": p.mirror_cids.as_ref().map(|c| c.iter().map(|x| DcProgramInfo::text(x)).collect::<Vec<_>>()),
        }),
        Ok(None) => serde_json::Value::Null,
        Err(e) => json!({ "error": e.to_string() }),
    };
    let ids_error = obs.enclave_ids.as_ref().err().map(|e| e.to_string());
    if a.json {
        let out = json!({
            "endpoint": obs.endpoint,
            "finalized_block": obs.block_number,
            "finalized_hash": obs.block_hash,
            "dc_program": program,
            "enclave_ids": entries,
            "enclave_ids_error": ids_error,
            "decision": decision,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("endpoint      {}", obs.endpoint);
    println!("finalized     #{} {}", obs.block_number, obs.block_hash);
    match &obs.program {
        Ok(Some(p)) => {
            println!("DcProgram");
            println!("  version     {}", DcProgramInfo::text(&p.version));
            println!("  enclave_id  {}", DcProgramInfo::text(&p.enclave_id));
            println!("  origin_url  {}", DcProgramInfo::text(&p.origin_url));
            println!("  mirror_url  {}", DcProgramInfo::text(&p.mirror_url));
            match &p.mirror_cids {
                Some(c) => println!(
                    "  mirror_cids {:?}",
                    c.iter().map(|x| DcProgramInfo::text(x)).collect::<Vec<_>>()
                ),
                None => println!("  mirror_cids (absent: four-field layout)"),
            }
        }
        Ok(None) => println!("DcProgram     (none stored)"),
        Err(e) => println!("DcProgram     undecodable: {e}"),
    }
    match ids_error {
        Some(e) => println!("EnclaveIds    undecodable: {e}"),
        None => {
            println!("EnclaveIds    {} entries", entries.len());
            for e in &entries {
                println!(
                    "  #{:<8} {}  {}",
                    e["block"],
                    e["enclave_id"].as_str().unwrap_or_default(),
                    if e["valid"].as_bool() == Some(true) {
                        format!(
                            "signature valid ({})",
                            e["signed_by"].as_str().unwrap_or_default()
                        )
                    } else {
                        "signature INVALID".into()
                    }
                );
            }
        }
    }
    println!("decision      {decision}");
    Ok(())
}
