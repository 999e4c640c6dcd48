//! `dcupgrade-demo`: the demo upgrade on the software TEE platform and a local feed (README
//! quick start, `scripts/demo`). It runs the `dctee-sim`, `dcnode` and `dcupgrade` binaries
//! found next to it; see [`demo`].

use clap::Parser;

mod demo;

#[derive(Parser)]
#[command(
    name = "dcupgrade-demo",
    version,
    about = "The demo upgrade: the dcupgrade agent upgrades dcnode v1 to v2 on the software TEE platform while a client keeps reading"
)]
struct Cli {
    #[command(flatten)]
    args: demo::DemoArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    dc_log::init("DCUPGRADE_DEMO_LOG", false);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dcupgrade-demo: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(demo::run(cli.args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dcupgrade-demo: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
