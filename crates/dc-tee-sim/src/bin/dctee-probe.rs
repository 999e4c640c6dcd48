//! `dctee-probe`: a minimal enclave program for exercising a TEE platform by hand and in the
//! platform's integration tests. Runs inside `dctee-sim launch`.
//!
//! Commands (after the bundle's own arguments):
//!   identity                       print this enclave's identity
//!   target-info OUT                write own TARGETINFO (512 bytes)
//!   report TARGET DATA_HEX OUT     write a REPORT for the TARGETINFO file
//!   verify REPORT                  verify a REPORT file made for this enclave
//!   seal mrenclave|mrsigner TEXT OUT
//!   unseal mrenclave|mrsigner BLOB print the unsealed text
//!   seal-raw POLICY_BITS ATTR_FLAGS_MASK AAD_TEXT PLAINTEXT_FILE OUT
//!                                  seal under a hand-made KEYREQUEST (what a hostile enclave
//!                                  could plant); POLICY_BITS u16, ATTR_FLAGS_MASK u64, decimal
//!   unseal-unchecked BLOB          unseal without the KEYREQUEST check (the old behaviour),
//!                                  to show what the check prevents
//!   open-fds                       list the open file descriptors, before taking the channel
//!   spawn-child-check              report whether a child process inherits the channel
//!   getkey-bad-name                EGETKEY with an unknown KEYNAME
//!   garbage | oversized            violate the channel protocol, then try a request
//!   hold SECONDS                   stay up, asking for reports, for this long
//!   manifest                       print the measured manifest
//!   env                            print the environment, sorted, before taking anything
//!   accept-once NAME               take the passed listening sockets (LISTEN_FDS), accept one
//!                                  connection on the one named NAME, write a line to it

use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::ExitCode;

use dc_tee::seal;
use dc_tee::sim::{take_channel_from_env, wire, SimTee};
use dc_tee::{Attributes, KeyId, KeyRequest, Report, ReportData, SealPolicy, TargetInfo, Tee};

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

fn policy(name: &str) -> Result<SealPolicy, String> {
    match name {
        "mrenclave" => Ok(SealPolicy::MrEnclave),
        "mrsigner" => Ok(SealPolicy::MrSigner),
        p => Err(format!("unknown policy {p}: mrenclave or mrsigner")),
    }
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
            let blob = tee()?
                .seal(policy(a(1)?)?, b"probe", a(2)?.as_bytes())
                .map_err(|e| e.to_string())?;
            write(a(3)?, &blob.0)?;
        }
        "unseal" => {
            let text = tee()?
                .unseal(policy(a(1)?)?, &read(a(2)?)?, b"probe")
                .map_err(|e| e.to_string())?;
            println!("unsealed={}", String::from_utf8_lossy(&text));
        }
        "seal-raw" => {
            let bits: u16 = a(1)?.parse().map_err(|_| "POLICY_BITS must be a u16")?;
            let flags: u64 = a(2)?.parse().map_err(|_| "ATTR_FLAGS_MASK must be a u64")?;
            let t = tee()?;
            let me = t.self_report().map_err(|e| e.to_string())?;
            let mut key_id = [0u8; 32];
            getrandom::getrandom(&mut key_id).map_err(|e| e.to_string())?;
            let mut req = seal::seal_key_request(SealPolicy::MrEnclave, &me, KeyId(key_id));
            req.key_policy = bits;
            req.attribute_mask = Attributes { flags, xfrm: 0 };
            let key = t.get_key(&req).map_err(|e| e.to_string())?;
            let blob = seal::seal_with_key(&req, &key, a(3)?.as_bytes(), &read(a(4)?)?)
                .map_err(|e| e.to_string())?;
            write(a(5)?, &blob.0)?;
        }
        "unseal-unchecked" => {
            let blob = read(a(1)?)?;
            let parsed = seal::parse(&blob).map_err(|e| e.to_string())?;
            let key = tee()?
                .get_key(&parsed.key_request)
                .map_err(|e| e.to_string())?;
            let text = seal::open_with_key(&parsed, &key, b"probe").map_err(|e| e.to_string())?;
            println!("unsealed={}", String::from_utf8_lossy(&text));
        }
        "open-fds" => {
            // fcntl opens nothing itself, unlike listing /proc/self/fd.
            let open: Vec<String> = (0..4096)
                // SAFETY: F_GETFD only queries the descriptor table.
                .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0)
                .map(|fd| fd.to_string())
                .collect();
            println!("fds={}", open.join(","));
        }
        "spawn-child-check" => {
            let ch = take_channel_from_env().map_err(|e| e.to_string())?;
            let mine = std::fs::read_link(format!("/proc/self/fd/{}", ch.as_raw_fd()))
                .map_err(|e| e.to_string())?;
            // The child waits on stdin, so its descriptor table can be read after exec.
            let mut child = std::process::Command::new("/bin/sh")
                .args(["-c", "read x"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("/bin/sh: {e}"))?;
            let fds = std::fs::read_dir(format!("/proc/{}/fd", child.id()));
            let inherited = fds.map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .any(|target| target == mine)
            });
            drop(child.stdin.take());
            let _ = child.wait();
            let inherited = inherited.map_err(|e| format!("child fds: {e}"))?;
            println!("channel={}", mine.display());
            println!("child-has-channel={inherited}");
            // The enclave itself still has its channel.
            let t = SimTee::from_stream(ch).map_err(|e| e.to_string())?;
            t.target_info().map_err(|e| e.to_string())?;
            println!("channel-still-served=true");
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
        "env" => {
            let mut vars: Vec<String> = std::env::vars_os()
                .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
                .collect();
            vars.sort();
            println!("pid={}", std::process::id());
            for v in vars {
                println!("env:{v}");
            }
        }
        "accept-once" => {
            let name = a(1)?;
            let listeners = dc_tee::sim::listen_fds_from_env().map_err(|e| e.to_string())?;
            let names: Vec<&str> = listeners.iter().map(|(n, _)| n.as_str()).collect();
            println!("listeners={}", names.join(","));
            println!(
                "fds={}",
                listeners
                    .iter()
                    .map(|(_, l)| l.as_raw_fd().to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            // The channel still works: it follows the sockets.
            tee()?.target_info().map_err(|e| e.to_string())?;
            let (_, l) = listeners
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| format!("no listening socket named {name}"))?;
            let (mut conn, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
            writeln!(conn, "hello from the enclave on {name}").map_err(|e| e.to_string())?;
            println!("accepted={name}");
        }
        "manifest" => {
            let m = tee()?.measured_manifest().map_err(|e| e.to_string())?;
            print!("{}", String::from_utf8_lossy(&m));
        }
        c => return Err(format!("unknown command {c}")),
    }
    Ok(())
}
