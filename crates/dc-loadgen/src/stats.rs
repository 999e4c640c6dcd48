//! Totals, failures by class and latency percentiles: overall, inside the switch windows,
//! and in steady state (outside them).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Op, Outcome, Sample, Verification};

/// Latency percentiles (nearest rank), in µs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Latency {
    /// `None` for no values.
    pub fn of(values: &mut [u64]) -> Option<Latency> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        let rank = |p: f64| values[((p * values.len() as f64).ceil() as usize).max(1) - 1];
        Some(Latency {
            p50_us: rank(0.50),
            p99_us: rank(0.99),
            max_us: values[values.len() - 1],
        })
    }
}

/// Statistics of a set of requests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    /// Failed requests by [`Outcome::class`].
    pub failures: BTreeMap<String, u64>,
    /// Latency of the successful requests (a failure's latency says little: a refused
    /// connection fails in microseconds); `None` if none succeeded.
    pub latency: Option<Latency>,
    /// Successful answers by the node version that served them.
    pub versions: BTreeMap<String, u64>,
}

impl Phase {
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Phase {
        let mut phase = Phase::default();
        let mut latencies = Vec::new();
        for s in samples {
            phase.requests += 1;
            match &s.outcome {
                Outcome::Ok { version } => {
                    phase.ok += 1;
                    latencies.push(s.latency_us);
                    *phase.versions.entry(version.clone()).or_default() += 1;
                }
                failure => {
                    phase.failed += 1;
                    *phase.failures.entry(failure.class()).or_default() += 1;
                }
            }
        }
        phase.latency = Latency::of(&mut latencies);
        phase
    }

    /// Failures whose class is `class`, or starts with it (`"http_5"`, `"other"`).
    pub fn failures_of(&self, class: &str) -> u64 {
        self.failures
            .iter()
            .filter(|(c, _)| c.starts_with(class))
            .map(|(_, n)| n)
            .sum()
    }
}

/// The report of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub overall: Phase,
    /// Requests that started outside every window.
    pub steady: Phase,
    /// Requests that started inside any window.
    pub switch: Phase,
    /// The windows, `[start_us, end_us)` since the run start.
    pub windows: Vec<(u64, u64)>,
    /// `switch`, window by window.
    pub per_window: Vec<Phase>,
    /// PUTs answered 2xx.
    pub writes_acknowledged: u64,
    /// Acknowledged writes read back (`None`: not verified).
    pub writes_checked: Option<u64>,
    /// Acknowledged writes missing or with different content.
    pub lost_writes: Option<u64>,
    /// Acknowledged writes whose read-back failed (neither confirmed nor lost).
    pub unreadable_writes: Option<u64>,
}

impl Report {
    pub fn new(
        samples: &[Sample],
        windows: &[(u64, u64)],
        verification: Option<&Verification>,
    ) -> Report {
        let window_of = |s: &Sample| {
            windows
                .iter()
                .position(|&(a, b)| (a..b).contains(&s.start_us))
        };
        let mut per_window = vec![Vec::new(); windows.len()];
        let mut steady = Vec::new();
        for s in samples {
            match window_of(s) {
                Some(i) => per_window[i].push(s),
                None => steady.push(s),
            }
        }
        Report {
            overall: Phase::of(samples),
            steady: Phase::of(steady),
            switch: Phase::of(per_window.iter().flatten().copied()),
            windows: windows.to_vec(),
            per_window: per_window.into_iter().map(Phase::of).collect(),
            writes_acknowledged: samples
                .iter()
                .filter(|s| s.op == Op::Put && s.outcome.is_ok())
                .count() as u64,
            writes_checked: verification.map(|v| v.checked),
            lost_writes: verification.map(Verification::lost),
            unreadable_writes: verification.map(|v| v.unreadable.len() as u64),
        }
    }
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

impl fmt::Display for Report {
    /// A table: one row each for overall, steady state and switch windows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<16}{:>10}{:>8}{:>9}{:>7}{:>9}{:>6}{:>7}{:>10}{:>10}{:>10}",
            "requests",
            "total",
            "failed",
            "refused",
            "reset",
            "timeout",
            "5xx",
            "other",
            "p50 ms",
            "p99 ms",
            "max ms"
        )?;
        let switch_label = format!("switch ({})", self.windows.len());
        let mut rows = vec![("overall", &self.overall)];
        if !self.windows.is_empty() {
            rows.push(("steady state", &self.steady));
            rows.push((&switch_label, &self.switch));
        }
        for (label, p) in rows {
            let (p50, p99, max) = match p.latency {
                Some(l) => (ms(l.p50_us), ms(l.p99_us), ms(l.max_us)),
                None => ("-".into(), "-".into(), "-".into()),
            };
            writeln!(
                f,
                "{:<16}{:>10}{:>8}{:>9}{:>7}{:>9}{:>6}{:>7}{:>10}{:>10}{:>10}",
                label,
                p.requests,
                p.failed,
                p.failures_of("refused"),
                p.failures_of("reset"),
                p.failures_of("timeout"),
                p.failures_of("http_5"),
                p.failures_of("other"),
                p50,
                p99,
                max
            )?;
        }
        writeln!(
            f,
            "(latency of successful requests; a request counts in the window its start falls in)"
        )?;
        let windows_ms: u64 = self.windows.iter().map(|(a, b)| b.saturating_sub(*a)).sum();
        if !self.windows.is_empty() {
            writeln!(
                f,
                "switch windows: {} totalling {} ms",
                self.windows.len(),
                ms(windows_ms)
            )?;
        }
        write!(f, "acknowledged PUTs: {}", self.writes_acknowledged)?;
        match (
            self.writes_checked,
            self.lost_writes,
            self.unreadable_writes,
        ) {
            (Some(c), Some(l), Some(u)) => {
                writeln!(f, "; read back {c}: lost {l}, unreadable {u}")?
            }
            _ => writeln!(f, "; not read back")?,
        }
        let versions: Vec<String> = self
            .overall
            .versions
            .iter()
            .map(|(v, n)| format!("{} {n}", if v.is_empty() { "(none)" } else { v }))
            .collect();
        writeln!(f, "served by version: {}", versions.join(", "))?;
        for (class, n) in self
            .overall
            .failures
            .iter()
            .filter(|(c, _)| c.starts_with("other"))
        {
            writeln!(f, "  {class}: {n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(start_us: u64, latency_us: u64, outcome: Outcome) -> Sample {
        Sample {
            start_us,
            latency_us,
            op: Op::Get,
            client: 0,
            keep_alive: true,
            outcome,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let l = Latency::of(&mut v).unwrap();
        assert_eq!((l.p50_us, l.p99_us, l.max_us), (50, 99, 100));
        assert_eq!(Latency::of(&mut []), None);
        let l = Latency::of(&mut [7]).unwrap();
        assert_eq!((l.p50_us, l.p99_us, l.max_us), (7, 7, 7));
    }

    #[test]
    fn windows_split_steady_state_from_switch() {
        let ok = || Outcome::Ok {
            version: "1".into(),
        };
        let samples = [
            sample(10, 100, ok()),
            sample(1_000, 5_000, ok()),
            sample(1_100, 1, Outcome::Refused),
            sample(1_999, 2, Outcome::Http5xx(503)),
            sample(2_000, 200, ok()),
            sample(5_000, 9, Outcome::Reset),
        ];
        let r = Report::new(&samples, &[(1_000, 2_000), (4_000, 6_000)], None);
        assert_eq!((r.overall.requests, r.overall.failed), (6, 3));
        assert_eq!((r.steady.requests, r.steady.failed), (2, 0));
        assert_eq!((r.switch.requests, r.switch.failed), (4, 3));
        assert_eq!(r.switch.latency.unwrap().max_us, 5_000);
        assert_eq!(r.steady.latency.unwrap().max_us, 200);
        assert_eq!(r.per_window[0].failures_of("http_5"), 1);
        assert_eq!(r.per_window[1].failures_of("reset"), 1);
        assert_eq!(r.lost_writes, None);
        let table = r.to_string();
        assert!(table.contains("switch (2)"), "{table}");
    }
}
