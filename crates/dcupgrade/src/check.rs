//! `dcupgrade check --chain ws://HOST:PORT`: what DCChain says now, and what the agent would
//! do about it — using the agent's own evaluation code. With `--download DIR`, also fetches
//! the announced release's artifact with the agent's downloader (a progress bar when stderr
//! is a terminal) and verifies it as the agent would before touching the node.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::status_text::clean;
use anyhow::{anyhow, bail, Context, Result};
use dc_chain::{DcProgramInfo, Event};
use dc_handover::Version;
use dc_release::{Committee, CommitteeKey};
use dcupgrade::download::{self, Downloader, Progress, Stage};
use dcupgrade::source::{evaluate_chain, Candidate};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
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
    /// Also download the artifact of the release the chain announces into DIR (the store:
    /// `DIR/<sha256>.tar`, unpacked to `DIR/<mrenclave>`) and verify it as the agent would:
    /// the bundle's measurement against the committee-signed EnclaveID, product, version and
    /// the release evidence. A progress bar when stderr is a terminal; the exit status is
    /// non-zero if there is nothing to download or it does not verify.
    #[arg(long, value_name = "DIR")]
    download: Option<PathBuf>,
    /// Extra PEM root certificate for https downloads (repeatable), as `run --download-ca`.
    #[arg(long = "download-ca", requires = "download")]
    download_ca: Vec<PathBuf>,
}

/// A verified download.
struct Downloaded {
    url: String,
    archive: PathBuf,
    size: u64,
    bundle_dir: PathBuf,
    version: String,
    isv_svn: u16,
    debug: bool,
}

/// A bar on stderr if a person is watching it, else nothing at all (pipes and logs stay
/// clean). Feed it with [`show`] from [`Downloader::fetch_with_progress`].
pub(crate) fn progress_bar() -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    ProgressBar::with_draw_target(None, target)
}

fn bar_style(total_known: bool) -> ProgressStyle {
    let template = if total_known {
        "{msg}\n[{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"
    } else {
        "{msg}\n[{elapsed_precise}] {spinner} {bytes} {binary_bytes_per_sec}"
    };
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// Shows a download's progress on `bar`: a new bar for each URL tried, cleared when every
/// byte is in.
pub(crate) fn show(bar: &ProgressBar, p: &Progress<'_>) {
    match p.stage {
        Stage::Started => {
            bar.reset();
            bar.set_style(bar_style(p.total.is_some()));
            match p.total {
                Some(t) => bar.set_length(t),
                None => bar.unset_length(),
            }
            bar.set_message(format!("downloading {}", clean(p.url)));
        }
        Stage::Receiving => bar.set_position(p.bytes),
        Stage::Received => {
            bar.set_position(p.bytes);
            bar.finish_and_clear();
        }
    }
}

/// Downloads `c`'s artifact into `dir` and verifies it; an artifact that does not verify is
/// not kept.
async fn download_and_verify(
    c: &Candidate,
    committee: &Committee,
    dir: &Path,
    roots: &[Vec<u8>],
    allow_debug: bool,
) -> Result<Downloaded> {
    let downloader = Downloader::with_roots(dir, roots)?;
    let bar = progress_bar();
    let mut url = String::new();
    let fetched = downloader
        .fetch_with_progress(&c.fetch, &mut |p: &Progress<'_>| {
            if p.stage == Stage::Started {
                url = p.url.to_string();
            }
            show(&bar, p)
        })
        .await;
    bar.finish_and_clear();
    let archive = fetched?;
    if url.is_empty() {
        url = "(already in the store)".into();
    }
    let size = std::fs::metadata(&archive)
        .with_context(|| archive.display().to_string())?
        .len();
    let mre = c.mr_enclave.to_string();
    let tmp = dir.join(format!(".unpack-{}-{}", std::process::id(), now_ns()));
    let bundle = match download::verify_artifact(
        &archive,
        c,
        committee,
        dc_release::authorizer::unix_now(),
        allow_debug,
        &tmp,
    ) {
        Ok((b, _)) => b,
        Err(e) => {
            // Not the signed enclave: not kept, as the agent does.
            let _ = std::fs::remove_file(&archive);
            bail!("{url}: {e}");
        }
    };
    let bundle_dir = dir.join(&mre);
    if bundle_dir.exists() {
        std::fs::remove_dir_all(&bundle_dir).with_context(|| bundle_dir.display().to_string())?;
    }
    std::fs::rename(&tmp, &bundle_dir).with_context(|| bundle_dir.display().to_string())?;
    Ok(Downloaded {
        url,
        archive,
        size,
        bundle_dir,
        version: bundle.manifest.version.clone(),
        isv_svn: bundle.manifest.isv_svn,
        debug: bundle.manifest.debug,
    })
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// Text from the chain (any bytes an RPC node sends), made safe to print.
fn text(b: &[u8]) -> String {
    clean(&DcProgramInfo::text(b))
}

pub async fn run(a: CheckArgs) -> Result<()> {
    // The agent's DEBUG policy, if its manifest is given.
    let mut allow_debug = None;
    let committee = match &a.manifest {
        Some(p) => {
            let m = dc_bundle::Manifest::parse(
                &std::fs::read(p).with_context(|| p.display().to_string())?,
            )?;
            allow_debug = Some(m.trust.allow_debug_peers);
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
    let roots: Vec<Vec<u8>> = a
        .download_ca
        .iter()
        .map(|p| std::fs::read(p).with_context(|| p.display().to_string()))
        .collect::<Result<_>>()?;
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
    let evaluated = evaluate_chain(&obs, &committee, &[]);
    let decision = match &evaluated {
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
    // The download, for `--download`: after the chain's summary in text (the bar between
    // them), inside the one object in JSON.
    let download = |dir: PathBuf| {
        let (evaluated, committee, roots, decision) = (&evaluated, &committee, &roots, &decision);
        async move {
            match evaluated {
                // Without --manifest the agent's DEBUG policy is unknown: not applied.
                Ok(Some(c)) => {
                    download_and_verify(c, committee, &dir, roots, allow_debug.unwrap_or(true))
                        .await
                }
                _ => Err(anyhow!("nothing to download: {decision}")),
            }
        }
    };
    if a.json {
        let downloaded = match a.download.clone() {
            Some(dir) => Some(download(dir).await),
            None => None,
        };
        let out = json!({
            "endpoint": obs.endpoint,
            "finalized_block": obs.block_number,
            "finalized_hash": obs.block_hash,
            "dc_program": program,
            "enclave_ids": entries,
            "enclave_ids_error": ids_error,
            "decision": decision,
            "download": downloaded.as_ref().map(|d| match d {
                Ok(d) => json!({
                    "url": d.url,
                    "artifact": d.archive,
                    "size": d.size,
                    "bundle": d.bundle_dir,
                    "version": d.version,
                    "isv_svn": d.isv_svn,
                    "debug": d.debug,
                    "verified": true,
                }),
                Err(e) => json!({ "verified": false, "error": format!("{e:#}") }),
            }),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return match downloaded {
            Some(Err(e)) => Err(e.context("download")),
            _ => Ok(()),
        };
    }
    println!("endpoint      {}", obs.endpoint);
    println!("finalized     #{} {}", obs.block_number, obs.block_hash);
    match &obs.program {
        Ok(Some(p)) => {
            println!("DcProgram");
            println!("  version     {}", text(&p.version));
            println!("  enclave_id  {}", text(&p.enclave_id));
            println!("  origin_url  {}", text(&p.origin_url));
            println!("  mirror_url  {}", text(&p.mirror_url));
            match &p.mirror_cids {
                Some(c) => println!(
                    "  mirror_cids {:?}",
                    c.iter().map(|x| text(x)).collect::<Vec<_>>()
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
                    clean(e["enclave_id"].as_str().unwrap_or_default()),
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
    println!("decision      {}", clean(&decision));
    if let Some(dir) = a.download.clone() {
        let d = download(dir).await.context("download")?;
        println!("download      {}", clean(&d.url));
        println!("  artifact    {} ({} bytes)", d.archive.display(), d.size);
        println!("  bundle      {}", d.bundle_dir.display());
        println!(
            "  verified    measures the committee-signed EnclaveID; {} {}, ISVSVN {}{}; release evidence valid",
            dcupgrade::agent::PRODUCT,
            d.version,
            d.isv_svn,
            if d.debug { ", DEBUG enclave" } else { "" }
        );
    }
    Ok(())
}
