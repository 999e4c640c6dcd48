//! The chart: two modes around their own switch on one time axis, failures marked.

use dc_loadgen::{around, svg_chart, Op, Outcome, Sample};

fn samples(switch_at_us: u64, gap_us: u64, failures: bool) -> Vec<Sample> {
    (0..2_000u64)
        .map(|i| {
            let start_us = i * 500;
            let in_gap = (switch_at_us..switch_at_us + gap_us).contains(&start_us);
            let outcome = if in_gap && failures {
                Outcome::Refused
            } else {
                Outcome::Ok {
                    version: if start_us < switch_at_us {
                        "1.0"
                    } else {
                        "1.1"
                    }
                    .into(),
                }
            };
            Sample {
                start_us,
                latency_us: if in_gap { 20_000 } else { 300 + i % 7 * 50 },
                op: Op::Get,
                client: (i % 4) as u32,
                keep_alive: i % 2 == 0,
                outcome,
            }
        })
        .collect()
}

#[test]
fn around_rebases_each_run_on_its_switch() {
    let run = samples(400_000, 30_000, false);
    let (cut, window) = around(&run, (400_000, 430_000), 100_000, 50_000);
    assert_eq!(window, (100_000, 130_000));
    assert_eq!(cut.first().unwrap().start_us, 100_000 - 100_000);
    assert!(cut.iter().all(|s| s.start_us < 180_000));
    assert_eq!(cut.len(), (180_000 / 500) as usize);
}

#[test]
fn draws_both_modes_with_failures_marked() {
    let mbb = samples(300_000, 5_000, false);
    let bbm = samples(600_000, 40_000, true);
    let (mbb, w1) = around(&mbb, (300_000, 305_000), 100_000, 100_000);
    let (bbm, w2) = around(&bbm, (600_000, 640_000), 100_000, 100_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switch.svg");
    svg_chart(
        &[("make-before-break", &mbb), ("break-before-make", &bbm)],
        &[w1, w2],
        &path,
    )
    .unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.starts_with("<svg"));
    for text in [
        "make-before-break",
        "break-before-make",
        "80 failed",
        "failed request",
        "switch window",
        "latency, ms",
    ] {
        assert!(svg.contains(text), "{text} missing");
    }
}

#[test]
fn empty_series_still_draw() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.svg");
    svg_chart(&[("nothing", &[])], &[], &path).unwrap();
    assert!(std::fs::read_to_string(&path).unwrap().contains("nothing"));
}
