//! `dc-loadgen`: runs load against a node, reads every acknowledged write back, prints the
//! report, and optionally writes it as JSON and the latency chart as SVG.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Parser;
use dc_loadgen::{run, svg_chart, LoadConfig, Report};

/// Load generator for a DC storage node (PUT/GET /v1/objects/{name}). Exits 2 if any request
/// failed or any acknowledged write was lost.
#[derive(Parser, Debug)]
#[command(name = "dc-loadgen")]
struct Args {
    /// Node address, e.g. 127.0.0.1:8080.
    #[arg(long)]
    target: SocketAddr,
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Run time in seconds (ends earlier if --requests is reached).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Requests per client at most.
    #[arg(long)]
    requests: Option<u64>,
    #[arg(long, default_value_t = 0.5)]
    keep_alive_fraction: f64,
    #[arg(long, default_value_t = 0.2)]
    put_fraction: f64,
    /// Bytes per object.
    #[arg(long, default_value_t = 4096)]
    object_size: usize,
    /// Whole-request timeout in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// A window START_MS-END_MS (ms since the run start) reported separately; repeatable.
    #[arg(long = "window", value_parser = parse_window)]
    windows: Vec<(u64, u64)>,
    /// Write the latency-over-time chart here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Write the configuration and report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Do not read the acknowledged writes back.
    #[arg(long)]
    no_verify: bool,
}

fn parse_window(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once('-').ok_or("expected START_MS-END_MS")?;
    let ms = |v: &str| v.trim().parse::<u64>().map_err(|e| format!("{v:?}: {e}"));
    let (a, b) = (ms(a)?, ms(b)?);
    if a >= b {
        return Err("window start must be before its end".into());
    }
    Ok((a * 1000, b * 1000))
}

#[tokio::main]
async fn main() -> Result<ExitCode> {
    let args = Args::parse();
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        return Err(anyhow!("--seconds must be positive"));
    }
    let config = LoadConfig {
        clients: args.clients,
        keep_alive_fraction: args.keep_alive_fraction,
        put_fraction: args.put_fraction,
        object_size: args.object_size,
        max_requests_per_client: args.requests,
        duration: Some(Duration::from_secs_f64(args.seconds)),
        request_timeout: Duration::from_millis(args.timeout_ms),
        ..LoadConfig::new(args.target)
    };
    eprintln!(
        "dc-loadgen: {} clients ({} keep-alive) against {} for up to {} s",
        config.clients,
        config.keep_alive_clients(),
        config.target,
        args.seconds
    );
    let run = run(config.clone()).await.map_err(|e| anyhow!(e))?;
    let verification = if args.no_verify {
        None
    } else {
        Some(run.verify_writes().await)
    };
    let report = Report::new(&run.samples, &args.windows, verification.as_ref());
    let seconds = run.elapsed_us as f64 / 1e6;
    println!(
        "{} requests in {seconds:.2} s ({:.0}/s)",
        report.overall.requests,
        report.overall.requests as f64 / seconds
    );
    print!("{report}");
    if let Some(path) = &args.svg {
        svg_chart(&[("dc-loadgen", &run.samples)], &args.windows, path)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("chart: {}", path.display());
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({ "config": config, "report": report });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("report: {}", path.display());
    }
    let clean = report.overall.failed == 0 && report.lost_writes.unwrap_or(0) == 0;
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
