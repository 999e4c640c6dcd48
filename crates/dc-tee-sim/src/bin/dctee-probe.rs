//! `dctee-probe`: a minimal enclave program for exercising a TEE platform by hand and in the
//! platform's integration tests. Runs inside `dctee-sim launch`.
//!
//! Commands (after the bundle's own arguments):
//!   identity                       print this enclave's identity
//!   target-info OUT                write own TARGETINFO (512 bytes)
//!   report TARGET DATA_HEX OUT     write a REPORT for the TARGETINFO file
//!   verify REPORT                  verify a REPORT file made for this enclave
//!   seal mrenclave|mrsigner TEXT OUT
//!   unseal BLOB                    print the unsealed text
//!   getkey-bad-name                EGETKEY with an unknown KEYNAME
//!   garbage | oversized            violate the channel protocol, then try a request
//!   hold SECONDS                   stay up, asking for reports, for this long
//!   manifest                       print the measured manifest

use std::io::Write;
use std::process::ExitCode;

use dc_tee::sim::{take_channel_from_env, wire, SimTee};
use dc_tee::{KeyId, KeyRequest, Report, ReportData, SealPolicy, TargetInfo, Tee};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn tee() -> Result<SimTee, String> {
    SimTee::from_env().map_err(|e| e.to_string())
}

fn read(p: &str) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("{p}: {e}"))
}

fn write(p: &str, b: &[u8]) -> Result<(), String> {
    std::fs::write(p, b).map_err(|e| format!("{p}: {e}"))
}

fn run(args: &[String]) -> Result<(), String> {
    let a = |i: usize| {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| format!("missing argument {i}"))
    };
    match a(0)? {
        "identity" => {
            let t = tee()?;
            let id = t.identity().map_err(|e| e.to_string())?;
            let me = t.self_report().map_err(|e| e.to_string())?;
            println!("mrenclave={}", id.mr_enclave);
            println!("mrsigner={}", id.mr_signer);
            println!("isvprodid={}", id.isv_prod_id);
            println!("isvsvn={}", id.isv_svn);
            println!("debug={}", id.is_debug());
            println!("attributes={:#x}", id.attributes.flags);
            println!("cpusvn={}", me.cpu_svn);
        }
        "target-info" => write(
            a(1)?,
            &tee()?.target_info().map_err(|e| e.to_string())?.to_bytes(),
        )?,
        "report" => {
            let target = TargetInfo::from_bytes(&read(a(1)?)?).map_err(|e| e.to_string())?;
            let data = ReportData::from_hex(a(2)?).map_err(|e| e.to_string())?;
            let r = tee()?.report(&target, &data).map_err(|e| e.to_string())?;
            write(a(3)?, &r.to_bytes())?;
        }
        "verify" => {
            let v = tee()?
                .verify_report_bytes(&read(a(1)?)?)
                .map_err(|e| e.to_string())?;
            println!(
                "verified mrenclave={} debug={} report_data={}",
                v.identity.mr_enclave,
                v.identity.is_debug(),
                v.report_data
            );
        }
        "seal" => {
            let policy = match a(1)? {
                "mrenclave" => SealPolicy::MrEnclave,
                "mrsigner" => SealPolicy::MrSigner,
                p => return Err(format!("unknown policy {p}")),
            };
            let blob = tee()?
                .seal(policy, b"probe", a(2)?.as_bytes())
                .map_err(|e| e.to_string())?;
            write(a(3)?, &blob.0)?;
        }
        "unseal" => {
            let text = tee()?
                .unseal(&read(a(1)?)?, b"probe")
                .map_err(|e| e.to_string())?;
            println!("unsealed={}", String::from_utf8_lossy(&text));
        }
        "getkey-bad-name" => {
            let mut req = KeyRequest::report_key(KeyId::ZERO);
            req.key_name = 7;
            match tee()?.get_key(&req) {
                Ok(_) => return Err("EGETKEY with KEYNAME 7 succeeded".into()),
                Err(e) => println!("refused: {e}"),
            }
        }
        "garbage" | "oversized" => {
            let mut ch = take_channel_from_env().map_err(|e| e.to_string())?;
            if a(0)? == "garbage" {
                ch.write_all(&[0xFF; 64]).map_err(|e| e.to_string())?;
            } else {
                ch.write_all(&(64 * 1024 * 1024u32).to_le_bytes())
                    .map_err(|e| e.to_string())?;
            }
            // The platform must close our channel; a request after that must fail.
            let _ = wire::read_frame(&mut ch, wire::MAX_RESPONSE);
            let t = SimTee::from_stream(ch).map_err(|e| e.to_string())?;
            match t.target_info() {
                Ok(_) => {
                    return Err(
                        "the platform kept serving a channel after a protocol violation".into(),
                    )
                }
                Err(e) => println!("channel closed: {e}"),
            }
        }
        "hold" => {
            let secs: u64 = a(1)?.parse().map_err(|_| "SECONDS must be a number")?;
            let t = tee()?;
            println!("holding");
            let _ = std::io::stdout().flush();
            let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
            let mut n = 0u64;
            while std::time::Instant::now() < end {
                let me = t.target_info().map_err(|e| e.to_string())?;
                let r: Report = t
                    .report(&me, &ReportData::ZERO)
                    .map_err(|e| e.to_string())?;
                t.verify_report(&r).map_err(|e| e.to_string())?;
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            println!("served {n} round trips");
        }
        "manifest" => {
            let m = tee()?.measured_manifest().map_err(|e| e.to_string())?;
            print!("{}", String::from_utf8_lossy(&m));
        }
        c => return Err(format!("unknown command {c}")),
    }
    Ok(())
}
