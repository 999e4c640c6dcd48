//! `dcupgrade status` and `dcupgrade history` for people: the agent's [`StatusView`] and the
//! journal's upgrade history rendered as text. Pure functions of what the API returned and
//! the current time, so the output is tested without an agent.
//!
//! Everything shown comes from the agent's API; strings that may carry text from outside the
//! agent (reasons, refusals, chain errors) are printed with control characters escaped, so a
//! hostile feed file name cannot move the cursor or forge lines.

use std::fmt::Write as _;

use dc_orchestrator::state::{HistoryEntry, State, UpgradeOutcome};
use dcupgrade::agent::{ChainView, StatusView};

/// Refusals shown by `status` (the agent keeps the latest 100; `--json` has them all).
const REFUSALS_SHOWN: usize = 10;

/// Escapes control characters (newlines included) and the Unicode controls that reorder or
/// hide text (bidi overrides and isolates, zero-width marks): one record, one line, shown as
/// it is. For every string from outside the program (files, peers, the chain, other
/// processes) printed to a terminal.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let format_control = matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}');
        if c.is_control() || format_control {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A duration for people: `850 ms`, `4.07 s`, `12.3 s`, `4 min 05 s`, `2 h 07 min`,
/// `3 d 04 h`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=9_999 => format!("{s}.{:02} s", (ms % 1000) / 10),
        10_000..=119_999 => format!("{s}.{} s", (ms % 1000) / 100),
        120_000..=3_599_999 => format!("{} min {:02} s", s / 60, s % 60),
        3_600_000..=172_799_999 => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {:02} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `at` relative to `now`: `3 min 05 s ago`, `in 59 min 58 s`, `now`.
pub fn relative(at_ms: u64, now_ms: u64) -> String {
    if at_ms == now_ms {
        "now".into()
    } else if at_ms < now_ms {
        format!("{} ago", duration(now_ms - at_ms))
    } else {
        format!("in {}", duration(at_ms - now_ms))
    }
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SSZ` (UTC).
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// The first `n` characters of a hex identity, with an ellipsis if cut.
fn short(hex: &str, n: usize) -> String {
    let hex = clean(hex);
    match hex.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &hex[..i]),
        None => hex,
    }
}

fn outcome_text(o: UpgradeOutcome) -> &'static str {
    match o {
        UpgradeOutcome::Committed => "committed",
        UpgradeOutcome::RolledBack => "rolled back",
        UpgradeOutcome::Abandoned => "abandoned",
        UpgradeOutcome::Refused => "refused",
    }
}

fn downtime_text(d: Option<u64>) -> String {
    d.map_or_else(|| "unknown".into(), duration)
}

/// `dcupgrade status`: a multi-line summary.
pub fn status(s: &StatusView, now_ms: u64) -> String {
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(
        w,
        "agent        {} (MRENCLAVE {})",
        clean(&s.agent_version),
        clean(&s.agent_mr_enclave)
    );
    let Some(st) = &s.state else {
        let _ = writeln!(w, "journal      not loaded yet (the agent is starting)");
        tail(w, s);
        return o;
    };
    let _ = writeln!(w, "installed    dcnode {}", clean(&st.current.version));
    let _ = writeln!(w, "  MRENCLAVE  {}", clean(&st.current.mr_enclave));
    let _ = writeln!(
        w,
        "node         {}",
        if s.node_running {
            "running"
        } else {
            "NOT running"
        }
    );
    let phase = dc_orchestrator::Orchestrator::phase_name(st.phase);
    let _ = writeln!(
        w,
        "phase        {phase}{}",
        if st.paused {
            " (paused: no new upgrade starts; `dcupgrade resume`)"
        } else {
            ""
        }
    );
    if let Some(u) = &st.upgrade {
        let _ = writeln!(
            w,
            "  upgrading  to {} {} from {}, started {} ({})",
            clean(&u.target_version),
            short(&u.target_mr_enclave, 16),
            if u.source.is_empty() {
                "?".into()
            } else {
                clean(&u.source)
            },
            utc(u.started_at_ms),
            relative(u.started_at_ms, now_ms)
        );
    }
    let _ = writeln!(
        w,
        "floors       version {}, ISVSVN {} (no release below them is accepted)",
        clean(&st.highest_trusted),
        st.highest_isv_svn
    );
    let _ = writeln!(
        w,
        "upgrades     {} committed, {} recorded in the history",
        st.upgrades_completed,
        st.history.len()
    );
    sources(w, s, now_ms);
    last_upgrade(w, st, now_ms);
    if !st.failed.is_empty() {
        let _ = writeln!(w, "failed releases (retried after their backoff):");
        for (mre, f) in &st.failed {
            let when = if f.retry_after_ms <= now_ms {
                "at the next offer".to_string()
            } else {
                format!(
                    "{} ({})",
                    utc(f.retry_after_ms),
                    relative(f.retry_after_ms, now_ms)
                )
            };
            let _ = writeln!(
                w,
                "  {} {}  attempts {}, next retry {when}",
                clean(&f.version),
                short(mre, 16),
                f.attempts
            );
            let _ = writeln!(w, "    reason: {}", clean(&f.reason));
        }
    }
    if !st.revoked.is_empty() {
        let _ = writeln!(w, "revoked      {} EnclaveID(s):", st.revoked.len());
        for m in &st.revoked {
            let _ = writeln!(w, "  {}", clean(m));
        }
    }
    tail(w, s);
    o
}

/// Release sources: the feed and the chain.
fn sources(w: &mut String, s: &StatusView, now_ms: u64) {
    let _ = writeln!(w, "sources");
    match &s.feed {
        Some(f) => {
            let _ = writeln!(w, "  feed       {}", clean(f));
        }
        None => {
            let _ = writeln!(w, "  feed       none");
        }
    }
    match &s.chain {
        None => {
            let _ = writeln!(w, "  chain      none");
        }
        Some(c) => chain(w, c, now_ms),
    }
}

fn chain(w: &mut String, c: &ChainView, now_ms: u64) {
    let state = if !c.connected {
        "disconnected"
    } else if c.syncing {
        "connected, node syncing (waiting)"
    } else {
        "connected"
    };
    let _ = writeln!(
        w,
        "  chain      {} ({state})",
        c.endpoint
            .as_deref()
            .map_or_else(|| "no endpoint reached yet".into(), clean)
    );
    match c.finalized_block {
        Some(n) => {
            let _ = writeln!(
                w,
                "    finalized #{n} {}",
                c.finalized_hash
                    .as_deref()
                    .map_or_else(String::new, |h| short(h, 18))
            );
            if let Some(at) = c.finalized_at_ms {
                let _ = writeln!(
                    w,
                    "    lag        {} since the last new finalized head (at {})",
                    duration(now_ms.saturating_sub(at)),
                    utc(at)
                );
            }
        }
        None => {
            let _ = writeln!(w, "    finalized  none seen yet");
        }
    }
    if let Some(p) = &c.last_problem {
        let _ = writeln!(w, "    last problem: {}", clean(p));
    }
}

/// The latest upgrade: its history entry and the journal's timeline.
fn last_upgrade(w: &mut String, st: &State, now_ms: u64) {
    if let Some(e) = st.history.last() {
        let _ = writeln!(
            w,
            "last upgrade {} → {} {}, ended {} ({}), took {}, downtime {}",
            clean(&e.from_version),
            clean(&e.to_version),
            outcome_text(e.outcome).to_uppercase(),
            utc(e.ended_at_ms),
            relative(e.ended_at_ms, now_ms),
            duration(e.duration_ms),
            downtime_text(e.downtime_ms)
        );
        if !e.reason.is_empty() {
            let _ = writeln!(w, "  reason: {}", clean(&e.reason));
        }
    } else if st.timeline.is_empty() {
        let _ = writeln!(w, "last upgrade none");
    }
    if let Some(first) = st.timeline.first() {
        let _ = writeln!(
            w,
            "timeline     (latest upgrade; started {}, {})",
            utc(first.at_ms),
            relative(first.at_ms, now_ms)
        );
        let mut prev = first.at_ms;
        for e in &st.timeline {
            let line = format!(
                "  +{:>10}  (+{:>10})  {:<17} {}",
                duration(e.at_ms.saturating_sub(first.at_ms)),
                duration(e.at_ms.saturating_sub(prev)),
                clean(&e.phase),
                clean(&e.note)
            );
            let _ = writeln!(w, "{}", line.trim_end());
            prev = e.at_ms;
        }
    }
}

/// Refusals and the last error: what an operator looks at when nothing happens.
fn tail(w: &mut String, s: &StatusView) {
    if !s.refused.is_empty() {
        let skip = s.refused.len().saturating_sub(REFUSALS_SHOWN);
        let _ = writeln!(
            w,
            "refused releases ({}{}, latest last):",
            s.refused.len(),
            if skip > 0 {
                format!("; the latest {REFUSALS_SHOWN} shown, --json has all")
            } else {
                String::new()
            }
        );
        for r in &s.refused[skip..] {
            let _ = writeln!(w, "  {}", clean(r));
        }
    }
    if let Some(e) = &s.last_error {
        let _ = writeln!(w, "last error   {}", clean(e));
    }
}

/// `dcupgrade history`: one line per finished upgrade, oldest first.
pub fn history(h: &[HistoryEntry], now_ms: u64) -> String {
    if h.is_empty() {
        return "no finished upgrades in the journal yet\n".into();
    }
    let rows: Vec<[String; 8]> = h
        .iter()
        .map(|e| {
            [
                utc(e.started_at_ms),
                clean(&e.from_version),
                clean(&e.to_version),
                short(&e.to_mr_enclave, 12),
                outcome_text(e.outcome).into(),
                duration(e.duration_ms),
                downtime_text(e.downtime_ms),
                clean(&e.reason),
            ]
        })
        .collect();
    let head = [
        "STARTED (UTC)",
        "FROM",
        "TO",
        "TO MRENCLAVE",
        "OUTCOME",
        "DURATION",
        "DOWNTIME",
        "REASON",
    ];
    let mut width = head.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; 8]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 7 {
                l.push_str(c);
            } else if i == 1 {
                // FROM → TO
                let _ = write!(l, "{c:<w$} → ", w = width[i]);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = width[i]);
            }
        }
        l.trim_end().to_string()
    };
    let mut o = String::new();
    let _ = writeln!(o, "{}", line(head).replacen(" → ", "   ", 1));
    for r in &rows {
        let _ = writeln!(o, "{}", line(r.each_ref().map(String::as_str)));
    }
    if let Some(last) = h.last() {
        let _ = writeln!(
            o,
            "{} upgrade(s); the latest ended {}",
            h.len(),
            relative(last.ended_at_ms, now_ms)
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use dc_orchestrator::state::{Failure, Phase, Release};
    use std::path::PathBuf;

    const NOW: u64 = 1_764_410_628_000; // 2025-11-29 10:03:48Z

    #[test]
    fn times_and_durations_read_well() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(NOW), "2025-11-29 10:03:48Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(duration(77), "77 ms");
        assert_eq!(duration(4_073), "4.07 s");
        assert_eq!(duration(12_345), "12.3 s");
        assert_eq!(duration(245_000), "4 min 05 s");
        assert_eq!(duration(7_620_000), "2 h 07 min");
        assert_eq!(duration(273_600_000), "3 d 04 h");
        assert_eq!(relative(NOW - 1000, NOW), "1.00 s ago");
        assert_eq!(relative(NOW + 3_540_000, NOW), "in 59 min 00 s");
        assert_eq!(relative(NOW + 7_170_000, NOW), "in 1 h 59 min");
        assert_eq!(relative(NOW, NOW), "now");
        assert!(utc(u64::MAX).ends_with('Z'), "no overflow");
    }

    fn view() -> StatusView {
        let mut st = State::new(Release {
            version: "2.0.0".into(),
            mr_enclave: "9c06".repeat(16),
            bundle_dir: PathBuf::from("/b"),
            record: None,
        });
        st.mark("candidate", NOW - 60_000, "2.0.0 9c06… from feed");
        st.mark("switching", NOW - 59_800, "");
        st.mark("new_node_serving", NOW - 59_723, "");
        st.mark("idle", NOW - 59_700, "committed");
        st.record(HistoryEntry {
            from_version: "1.0.0".into(),
            from_mr_enclave: "aa".repeat(32),
            to_version: "2.0.0".into(),
            to_mr_enclave: "9c06".repeat(16),
            source: "feed".into(),
            outcome: UpgradeOutcome::Committed,
            reason: String::new(),
            started_at_ms: NOW - 60_000,
            ended_at_ms: NOW - 59_700,
            duration_ms: 300,
            downtime_ms: Some(77),
        });
        st.failed.insert(
            "bb".repeat(32),
            Failure {
                version: "3.0.0".into(),
                attempts: 1,
                retry_after_ms: NOW + 3_540_000,
                reason: "health check failed: probe\ndiffers".into(),
            },
        );
        st.phase = Phase::Idle;
        st.highest_trusted = "2.0.0".into();
        StatusView {
            agent_version: "0.1.0".into(),
            agent_mr_enclave: "ee".repeat(32),
            state: Some(st),
            node_running: true,
            last_error: None,
            refused: vec!["release 0.9.0 (00) from feed refused: lower than the highest".into()],
            chain: Some(ChainView {
                endpoint: Some("ws://127.0.0.1:9944".into()),
                connected: true,
                syncing: false,
                finalized_block: Some(1234),
                finalized_hash: Some(format!("0x{}", "ab".repeat(32))),
                finalized_at_ms: Some(NOW - 2_500),
                last_problem: None,
            }),
            feed: Some("/var/lib/dc/feed".into()),
        }
    }

    #[test]
    fn status_names_everything_an_operator_looks_for() {
        let text = status(&view(), NOW);
        for needle in [
            "installed    dcnode 2.0.0",
            &"9c06".repeat(16),
            "node         running",
            "phase        idle",
            "feed       /var/lib/dc/feed",
            "ws://127.0.0.1:9944 (connected)",
            "finalized #1234",
            "lag        2.50 s",
            "last upgrade 1.0.0 → 2.0.0 COMMITTED",
            "downtime 77 ms",
            "new_node_serving",
            "+    277 ms",
            "3.0.0 bbbbbbbbbbbbbbbb…  attempts 1, next retry 2025-11-29 11:02:48Z (in 59 min 00 s)",
            "reason: health check failed: probe\\ndiffers",
            "refused releases (1, latest last)",
            "lower than the highest",
        ] {
            assert!(text.contains(needle), "{needle:?} missing:\n{text}");
        }
        // One record, one line: the newline in the reason is escaped.
        assert!(!text.contains("probe\ndiffers"));
    }

    #[test]
    fn status_without_a_journal_or_chain_still_renders() {
        let mut v = view();
        v.state = None;
        v.chain = None;
        v.last_error = Some("journal write failed".into());
        let text = status(&v, NOW);
        assert!(text.contains("not loaded yet"), "{text}");
        assert!(text.contains("last error   journal write failed"), "{text}");
        let mut v = view();
        v.chain = Some(ChainView::default());
        let text = status(&v, NOW);
        assert!(
            text.contains("no endpoint reached yet (disconnected)"),
            "{text}"
        );
    }

    #[test]
    fn history_is_a_table_oldest_first() {
        let mut h = view().state.unwrap().history;
        h.push(HistoryEntry {
            from_version: "2.0.0".into(),
            from_mr_enclave: "9c06".repeat(16),
            to_version: "3.0.0".into(),
            to_mr_enclave: "bb".repeat(32),
            source: "feed".into(),
            outcome: UpgradeOutcome::RolledBack,
            reason: "health check failed: probe".into(),
            started_at_ms: NOW - 10_000,
            ended_at_ms: NOW - 6_000,
            duration_ms: 4_000,
            downtime_ms: None,
        });
        let text = history(&h, NOW);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("STARTED (UTC)"), "{text}");
        assert!(lines[1].contains("1.0.0 → 2.0.0"), "{text}");
        assert!(lines[1].contains("committed"), "{text}");
        assert!(lines[1].contains("77 ms"), "{text}");
        assert!(lines[2].contains("2.0.0 → 3.0.0"), "{text}");
        assert!(lines[2].contains("rolled back"), "{text}");
        assert!(lines[2].contains("unknown"), "{text}");
        assert!(lines[2].ends_with("health check failed: probe"), "{text}");
        // Columns line up.
        let col = |l: &str| l.find("committed").or_else(|| l.find("rolled back"));
        assert_eq!(col(lines[1]), col(lines[2]), "{text}");
        assert_eq!(
            history(&[], NOW),
            "no finished upgrades in the journal yet\n"
        );
    }
}
