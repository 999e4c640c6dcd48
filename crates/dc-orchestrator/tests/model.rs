//! The orchestrator core, model-checked with `stateright` together with models of the old
//! node, the new node and the host.
//!
//! The model runs the real [`Orchestrator`] — not a copy of its rules — and plays its
//! environment: the driver carrying out each action with every outcome it can have (success,
//! failure, an unconfirmed stop), the nodes (launched, given keys, ready, crashed), and the
//! host, which may crash the agent at any step (its nodes die with it, as the platform and
//! the launch broker stop an agent's nodes), restart it from the journal on disk or from
//! *any journal it ever wrote*, and offer a release the committee never signed. Time does not
//! pass, so a failed release stays in backoff and every path ends.
//!
//! Properties (docs/orchestrator.md states them in prose):
//! 1. `keys are never lost`: the release the journal on disk names as installed always holds
//!    a sealed keyring (so whatever restarts from it can unseal);
//! 2. `keys only to signed releases`: keys are delivered only to a measurement the committee
//!    signed for this upgrade;
//! 3. `never two serving nodes`;
//! 4. `settles with one serving node`: in every state where nothing more can happen (crashes
//!    and offers exhausted), the agent is idle and exactly one node serves, the installed one;
//! 5. `floor never decreases`: from the journal it starts from, the orchestrator never writes
//!    a lower version floor;
//! 6. `history records every finished upgrade`: whenever an upgrade in progress ends, exactly
//!    one history entry is appended, naming its from and to releases and the right outcome
//!    (committed only if the target became the installed release, refused only for a release
//!    refused at its download), and nothing else ever changes the history; an action
//!    `Finished(outcome)` reports the outcome the latest entry records.
//!
//! The history is not part of the explored state: it never feeds a decision, so two states
//! that differ only in it have the same futures. The model's hash and equality of the agent
//! leave it out, and the journals the host keeps are stored without it; property 6 is checked
//! on each transition instead. (With the history in the state, the explored states grew by
//! 19 % (break-before-make) and 27 % (make-before-break), and the run time with them.)
//!
//! A planted bug — a driver that reports a stop as confirmed without waiting for the exit —
//! must be found (`the_checker_finds_a_planted_bug`).

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::Instant;

use dc_orchestrator::core::{
    Action, Event, Offer, Orchestrator, Policy, StepError, SwitchMode, Taken, Verified,
};
use dc_orchestrator::state::{Release, State, UpgradeOutcome};
use stateright::{Checker, Model, Property};

const V1: &str = "aa";
const V2: &str = "bb";
/// Offered by the host; the committee never signed it.
const UNSIGNED: &str = "cc";

fn release(mre: &str) -> Release {
    let version = match mre {
        V1 => "1.0.0",
        V2 => "2.0.0",
        _ => "3.0.0",
    };
    Release {
        version: version.into(),
        mr_enclave: mre.into(),
        bundle_dir: PathBuf::from(format!("/bundles/{mre}")),
        record: None,
    }
}

fn signed(mre: &str) -> bool {
    mre == V1 || mre == V2
}

fn offers() -> Vec<Offer> {
    [V2, UNSIGNED]
        .iter()
        .map(|m| Offer {
            version: release(m).version.parse().unwrap(),
            mr_enclave: (*m).into(),
            isv_svn: None,
            source: "model".into(),
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Proc {
    Down,
    /// Launched, not serving yet.
    Starting,
    /// Make-before-break: holds the keys sealed, waits for the data directory's lock.
    Standby,
    Serving,
}

#[derive(Clone, Debug)]
struct AgentProc {
    core: Orchestrator,
    /// The action the core asked for and the driver has not completed.
    pending: Action,
    /// The node process the driver tracks (its handle).
    tracked: Option<&'static str>,
    /// The standby it tracks (make-before-break).
    standby: Option<&'static str>,
    /// Keys held in transit (taken from the old node, not yet delivered).
    keys: bool,
    /// The floor of the journal it started from.
    start_floor: String,
}

/// The journaled state without its history (which no decision reads). Destructured, so a new
/// field of `State` must be added here.
#[allow(clippy::type_complexity)]
fn decisive(
    s: &State,
) -> (
    &Release,
    &String,
    &u16,
    &dc_orchestrator::state::Phase,
    &Option<dc_orchestrator::state::Upgrade>,
    &std::collections::BTreeMap<String, dc_orchestrator::state::Failure>,
    &Vec<dc_orchestrator::state::TimelineEntry>,
    &u64,
    &bool,
    &std::collections::BTreeSet<String>,
) {
    let State {
        current,
        highest_trusted,
        highest_isv_svn,
        phase,
        upgrade,
        failed,
        timeline,
        upgrades_completed,
        paused,
        revoked,
        history: _,
    } = s;
    (
        current,
        highest_trusted,
        highest_isv_svn,
        phase,
        upgrade,
        failed,
        timeline,
        upgrades_completed,
        paused,
        revoked,
    )
}

impl AgentProc {
    #[allow(clippy::type_complexity)]
    fn key(
        &self,
    ) -> (
        impl Hash + Eq + '_,
        &dc_orchestrator::core::Step,
        &Action,
        &Option<&'static str>,
        &Option<&'static str>,
        &bool,
        &String,
    ) {
        (
            decisive(self.core.state()),
            self.core.step(),
            &self.pending,
            &self.tracked,
            &self.standby,
            &self.keys,
            &self.start_floor,
        )
    }
}

impl PartialEq for AgentProc {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for AgentProc {}

impl Hash for AgentProc {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.key().hash(h)
    }
}

/// The journal as the host keeps it: without the history (see the module comment).
fn on_disk(mut s: State) -> State {
    s.history.clear();
    s
}

/// Property 6 for one transition of the agent's core from `before` to `after`.
fn history_ok(before: &AgentProc, after: &AgentProc) -> bool {
    use dc_orchestrator::core::Outcome as Ended;
    let (b, a) = (before.core.state(), after.core.state());
    // A reported end names the outcome the latest entry records.
    let expect = match &after.pending {
        Action::Finished(Ended::Committed { .. }) => Some(UpgradeOutcome::Committed),
        Action::Finished(Ended::RolledBack(_)) => Some(UpgradeOutcome::RolledBack),
        Action::Finished(Ended::Abandoned(StepError::Refused { .. })) => {
            Some(UpgradeOutcome::Refused)
        }
        Action::Finished(Ended::Abandoned(_)) => Some(UpgradeOutcome::Abandoned),
        _ => None,
    };
    if expect.is_some() && a.history.last().map(|e| e.outcome) != expect {
        return false;
    }
    let ended = b.upgrade.is_some() && a.upgrade.is_none();
    if !ended {
        return a.history == b.history;
    }
    let Some(u) = &b.upgrade else { return false };
    let n = b.history.len();
    if a.history.len() != n + 1 || a.history[..n] != b.history[..] {
        return false;
    }
    let e = &a.history[n];
    let committed = a.current.mr_enclave == u.target_mr_enclave;
    e.from_mr_enclave == b.current.mr_enclave
        && e.from_version == b.current.version
        && e.to_mr_enclave == u.target_mr_enclave
        && e.to_version == u.target_version
        && (e.outcome == UpgradeOutcome::Committed) == committed
        && (e.outcome == UpgradeOutcome::Committed) == e.reason.is_empty()
        && (e.outcome != UpgradeOutcome::Refused
            || b.phase == dc_orchestrator::state::Phase::Candidate)
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Sys {
    agent: Option<AgentProc>,
    /// The journal on disk.
    journal: State,
    /// Every journal the agent ever wrote (the host may restore any).
    written: Vec<State>,
    nodes: [(&'static str, Proc); 3],
    /// Releases with a sealed keyring in the data directory.
    sealed: Vec<&'static str>,
    /// Releases the keys were delivered to.
    delivered: Vec<&'static str>,
    /// Budgets: the host's crashes and restores, unconfirmed stops, failed actions.
    failures: u8,
    crashes: u8,
    restores: u8,
    stuck_stops: u8,
    /// Set when a journal write lowers the floor the agent started from.
    floor_lowered: bool,
    /// Set when a transition of the core breaks property 6.
    history_wrong: bool,
}

impl Sys {
    fn node(&self, mre: &str) -> Proc {
        self.nodes
            .iter()
            .find(|(m, _)| *m == mre)
            .map_or(Proc::Down, |(_, p)| *p)
    }
    fn set(&mut self, mre: &str, p: Proc) {
        for n in &mut self.nodes {
            if n.0 == mre {
                n.1 = p;
            }
        }
    }
    fn serving(&self) -> usize {
        self.nodes
            .iter()
            .filter(|(_, p)| *p == Proc::Serving)
            .count()
    }
}

/// The bug a test plants in the driver, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plant {
    None,
    /// Reports a stop as confirmed without waiting for the exit.
    UnconfirmedStopReportedAsConfirmed,
    /// Reports the standby stopped without stopping it.
    StandbyLeftRunning,
}

struct UpgradeModel {
    mode: SwitchMode,
    failures: u8,
    crashes: u8,
    restores: u8,
    stuck_stops: u8,
    plant: Plant,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Step {
    /// The driver completes the pending action with this outcome.
    Complete(Outcome),
    /// The agent picks a release among the offers.
    Offer,
    /// The agent's supervision restarts the installed node.
    Supervise,
    /// The timer retries a halted rollback.
    Tick,
    /// The host kills the agent (and so its nodes).
    Crash,
    /// The host restarts the agent from the journal on disk, or from an older one it kept.
    Restart { from: usize },
    /// A standby takes the data directory once no node holds it (its lock wait returns).
    TakeOver(&'static str),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Outcome {
    Ok,
    Fail,
    /// A stop whose exit is not confirmed (the node may still run).
    Stuck,
    /// The new node sealed the keys, then crashed before acknowledging.
    SealedThenCrashed,
    NodeExited,
}

/// A node launched to receive the keys (standby or new node), as the driver reports it: on
/// delivery it sealed them and is `on_delivery`; if it crashed after sealing they are sealed
/// (and counted as delivered to it) but it is down; otherwise it is down with nothing.
fn deliver(
    s: &mut Sys,
    a: &mut AgentProc,
    t: &'static str,
    outcome: Outcome,
    on_delivery: Proc,
) -> Event {
    let sealed = matches!(outcome, Outcome::Ok | Outcome::SealedThenCrashed) && a.keys;
    if sealed {
        if !s.sealed.contains(&t) {
            s.sealed.push(t);
        }
        if !s.delivered.contains(&t) {
            s.delivered.push(t);
        }
    }
    if outcome == Outcome::Ok && a.keys {
        a.keys = false;
        s.set(t, on_delivery);
        Event::Delivered(Result::Ok(t.into()))
    } else {
        s.set(t, Proc::Down);
        Event::Delivered(Err(StepError::Delivery("crashed".into())))
    }
}

fn target_of(core: &Orchestrator) -> Option<&'static str> {
    let m = core.state().upgrade.as_ref()?.target_mr_enclave.clone();
    [V1, V2, UNSIGNED].into_iter().find(|x| *x == m)
}

fn current_of(s: &State) -> &'static str {
    [V1, V2, UNSIGNED]
        .into_iter()
        .find(|x| *x == s.current.mr_enclave)
        .unwrap_or(V1)
}

impl UpgradeModel {
    fn outcomes(&self, s: &Sys, a: &AgentProc) -> Vec<Outcome> {
        let mut all = self.all_outcomes(s, a);
        if s.failures == 0 && all.len() > 1 {
            all.retain(|o| {
                !matches!(
                    o,
                    Outcome::Fail | Outcome::SealedThenCrashed | Outcome::NodeExited
                )
            });
        }
        all
    }

    fn all_outcomes(&self, s: &Sys, a: &AgentProc) -> Vec<Outcome> {
        use Outcome::*;
        match &a.pending {
            Action::Persist => vec![Ok, Fail],
            Action::Download(o) if signed(&o.mr_enclave) => vec![Ok, Fail, NodeExited],
            Action::Download(_) => vec![Fail],
            Action::TakeKeys => vec![Ok, Fail],
            Action::StopNode | Action::Switch if s.stuck_stops > 0 && a.tracked.is_some() => {
                vec![Ok, Stuck]
            }
            Action::StopNode | Action::Switch => vec![Ok],
            Action::StopStandby if s.stuck_stops > 0 && a.standby.is_some() => vec![Ok, Stuck],
            Action::StopStandby => vec![Ok],
            Action::LaunchNew | Action::LaunchStandby => vec![Ok, Fail, SealedThenCrashed],
            Action::AwaitReady | Action::CheckHealth | Action::StartCurrent => vec![Ok, Fail],
            Action::Idle | Action::Finished(_) => vec![],
        }
    }

    /// Carries out the pending action with `outcome`; returns the event for the core.
    fn complete(&self, s: &mut Sys, mut a: AgentProc, outcome: Outcome) -> Option<AgentProc> {
        let ok = outcome == Outcome::Ok;
        let event = match a.pending.clone() {
            Action::Persist => {
                if ok {
                    let st = on_disk(a.core.state().clone());
                    if version(&st.highest_trusted) < version(&a.start_floor) {
                        s.floor_lowered = true;
                    }
                    if !s.written.contains(&st) {
                        s.written.push(st.clone());
                    }
                    s.journal = st;
                    Event::Persisted(Result::Ok(()))
                } else {
                    Event::Persisted(Err("EIO".into()))
                }
            }
            Action::Download(o) => Event::Downloaded(match outcome {
                Outcome::Ok => Result::Ok(Verified {
                    target: release(&o.mr_enclave),
                    isv_svn: 1,
                }),
                Outcome::NodeExited => {
                    if let Some(t) = a.tracked {
                        s.set(t, Proc::Down);
                    }
                    a.tracked = None;
                    Err(StepError::NodeExitedDuringDownload)
                }
                _ => Err(StepError::Refused {
                    version: o.version.to_string(),
                    reason: "not signed / digest".into(),
                }),
            }),
            Action::TakeKeys => {
                // The holding node releases only to a committee-signed destination, and only
                // while it serves.
                let holder_ok = a.tracked.is_some_and(|t| s.node(t) == Proc::Serving);
                let dest_ok = target_of(&a.core).is_some_and(signed);
                if ok && holder_ok && dest_ok {
                    a.keys = true;
                    Event::KeysTaken(Result::Ok(Taken {
                        fingerprint: "f".into(),
                        probe_sha256: "p".into(),
                    }))
                } else {
                    Event::KeysTaken(Err(StepError::TakeKeys("refused".into())))
                }
            }
            Action::StopStandby => {
                let confirmed = match (outcome, self.plant) {
                    (_, Plant::StandbyLeftRunning) => true,
                    (Outcome::Stuck, _) => {
                        s.stuck_stops -= 1;
                        false
                    }
                    _ => {
                        if let Some(t) = a.standby.take() {
                            s.set(t, Proc::Down);
                        }
                        true
                    }
                };
                if confirmed {
                    a.standby = None;
                }
                Event::Stopped { confirmed }
            }
            Action::LaunchStandby => {
                let t = target_of(&a.core)?;
                s.set(t, Proc::Starting);
                a.standby = Some(t);
                deliver(s, &mut a, t, outcome, Proc::Standby)
            }
            Action::StopNode | Action::Switch => {
                let switching = matches!(a.pending, Action::Switch);
                let confirmed = match (outcome, self.plant) {
                    (Outcome::Stuck, Plant::UnconfirmedStopReportedAsConfirmed) => {
                        s.stuck_stops -= 1;
                        true
                    }
                    (Outcome::Stuck, Plant::None) => {
                        s.stuck_stops -= 1;
                        false
                    }
                    _ => {
                        if let Some(t) = a.tracked.take() {
                            s.set(t, Proc::Down);
                        }
                        true
                    }
                };
                if switching && confirmed {
                    // The driver now tracks the standby as the node.
                    a.tracked = a.standby.take();
                }
                Event::Stopped { confirmed }
            }
            Action::LaunchNew => {
                let t = target_of(&a.core)?;
                s.set(t, Proc::Starting);
                a.tracked = Some(t);
                deliver(s, &mut a, t, outcome, Proc::Starting)
            }
            Action::AwaitReady => match a.tracked {
                Some(t) if ok && s.node(t) == Proc::Starting && s.sealed.contains(&t) => {
                    s.set(t, Proc::Serving);
                    Event::Ready(Result::Ok(()))
                }
                // A standby serves only once it took the data directory (`TakeOver`).
                Some(t) if ok && s.node(t) == Proc::Serving => Event::Ready(Result::Ok(())),
                Some(t) if !ok && s.node(t) == Proc::Standby => {
                    s.set(t, Proc::Down);
                    Event::Ready(Err(StepError::NotReady("crashed".into())))
                }
                _ => Event::Ready(Err(StepError::NotReady("down".into()))),
            },
            Action::CheckHealth => match a.tracked {
                Some(t) if ok && s.node(t) == Proc::Serving => Event::Health(Result::Ok(())),
                _ => Event::Health(Err(StepError::Health("probe".into()))),
            },
            Action::StartCurrent => {
                let c = current_of(a.core.state());
                // It needs the data directory's lock: no other node may hold it.
                if ok && s.sealed.contains(&c) && s.serving() == 0 {
                    s.set(c, Proc::Serving);
                    a.tracked = Some(c);
                    Event::Started(Result::Ok(()))
                } else {
                    Event::Started(Err(StepError::Launch("does not start".into())))
                }
            }
            Action::Idle | Action::Finished(_) => return Some(a),
        };
        a.pending = a.core.handle(event, 0).ok()?;
        Some(a)
    }
}

fn version(v: &str) -> dc_handover::Version {
    v.parse().unwrap_or(dc_handover::Version::new(0, 0, 0))
}

fn waiting(a: &Action) -> bool {
    !matches!(a, Action::Idle | Action::Finished(_))
}

impl Model for UpgradeModel {
    type State = Sys;
    type Action = Step;

    fn init_states(&self) -> Vec<Sys> {
        let journal = State::new(release(V1));
        let core = Orchestrator::new(
            journal.clone(),
            Policy {
                retry_backoff_ms: 1000,
                mode: self.mode,
            },
        );
        let mut core2 = core.clone();
        let pending = core2.handle(Event::Start, 0).unwrap();
        vec![Sys {
            agent: Some(AgentProc {
                core: core2,
                pending,
                tracked: Some(V1),
                standby: None,
                keys: false,
                start_floor: "1.0.0".into(),
            }),
            written: vec![journal.clone()],
            journal,
            nodes: [
                (V1, Proc::Serving),
                (V2, Proc::Down),
                (UNSIGNED, Proc::Down),
            ],
            sealed: vec![V1],
            delivered: vec![],
            failures: self.failures,
            crashes: self.crashes,
            restores: self.restores,
            stuck_stops: self.stuck_stops,
            floor_lowered: false,
            history_wrong: false,
        }]
    }

    fn actions(&self, s: &Sys, out: &mut Vec<Step>) {
        // The data directory's lock: a standby takes over once no node serves (holds it).
        if s.serving() == 0 {
            for (m, p) in &s.nodes {
                if *p == Proc::Standby {
                    out.push(Step::TakeOver(m));
                }
            }
        }
        match &s.agent {
            Some(a) => {
                if waiting(&a.pending) {
                    for o in self.outcomes(s, a) {
                        out.push(Step::Complete(o));
                    }
                } else if a.core.is_idle() {
                    if s.serving() == 0
                        && a.tracked.is_none()
                        && !s.nodes.iter().any(|(_, p)| *p == Proc::Standby)
                    {
                        out.push(Step::Supervise);
                    } else if !a.core.state().paused && a.core.select(&offers(), 0).pick.is_some() {
                        out.push(Step::Offer);
                    }
                } else {
                    out.push(Step::Tick);
                }
                if s.crashes > 0 {
                    out.push(Step::Crash);
                }
            }
            None => {
                out.push(Step::Restart { from: usize::MAX });
                if s.restores > 0 {
                    for i in 0..s.written.len() {
                        if s.written[i] != s.journal {
                            out.push(Step::Restart { from: i });
                        }
                    }
                }
            }
        }
    }

    fn next_state(&self, last: &Sys, step: Step) -> Option<Sys> {
        let mut s = last.clone();
        let transition = matches!(step, Step::Complete(_) | Step::Offer | Step::Tick);
        match step {
            Step::Complete(o) => {
                if matches!(
                    o,
                    Outcome::Fail | Outcome::SealedThenCrashed | Outcome::NodeExited
                ) && s.failures > 0
                {
                    s.failures -= 1;
                }
                let a = s.agent.take()?;
                s.agent = Some(self.complete(&mut s, a, o)?);
            }
            Step::Offer => {
                let mut a = s.agent.take()?;
                let pick = a.core.select(&offers(), 0).pick?;
                a.pending = a.core.handle(Event::Begin(pick), 0).ok()?;
                s.agent = Some(a);
            }
            Step::Supervise => {
                let mut a = s.agent.take()?;
                let c = current_of(a.core.state());
                if s.sealed.contains(&c) && s.serving() == 0 {
                    s.set(c, Proc::Serving);
                    a.tracked = Some(c);
                }
                s.agent = Some(a);
                // A node that cannot unseal does not start; nothing else changes.
                if s == *last {
                    return None;
                }
            }
            Step::Tick => {
                let mut a = s.agent.take()?;
                a.pending = a.core.handle(Event::Tick, 0).ok()?;
                s.agent = Some(a);
            }
            Step::TakeOver(m) => {
                if s.serving() > 0 || s.node(m) != Proc::Standby {
                    return None;
                }
                s.set(m, Proc::Serving);
            }
            Step::Crash => {
                s.agent = None;
                s.crashes -= 1;
                for n in &mut s.nodes {
                    n.1 = Proc::Down;
                }
            }
            Step::Restart { from } => {
                // The restarted core starts from the journal: no transition of the history.
                let journal = if from == usize::MAX {
                    s.journal.clone()
                } else {
                    s.restores -= 1;
                    let j = s.written.get(from)?.clone();
                    s.journal = j.clone();
                    j
                };
                let mut core = Orchestrator::new(
                    journal.clone(),
                    Policy {
                        retry_backoff_ms: 1000,
                        mode: self.mode,
                    },
                );
                let pending = core.handle(Event::Start, 0).ok()?;
                s.agent = Some(AgentProc {
                    core,
                    pending,
                    tracked: None,
                    standby: None,
                    keys: false,
                    start_floor: journal.highest_trusted.clone(),
                });
            }
        }
        if transition {
            if let (Some(b), Some(a)) = (&last.agent, &s.agent) {
                if !history_ok(b, a) {
                    s.history_wrong = true;
                }
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("keys are never lost", |_, s: &Sys| {
                s.sealed.contains(&current_of(&s.journal))
            }),
            Property::always("keys only to signed releases", |_, s: &Sys| {
                s.delivered.iter().all(|m| signed(m))
            }),
            Property::always("never two serving nodes", |_, s: &Sys| s.serving() <= 1),
            Property::always(
                "settles with one serving node",
                |m: &UpgradeModel, s: &Sys| {
                    let mut next = vec![];
                    m.actions(s, &mut next);
                    if !next.is_empty() {
                        return true;
                    }
                    // The release the agent has installed (a best-effort journal write may lag;
                    // a restart from it resolves to the same release).
                    s.agent.as_ref().is_some_and(|a| {
                        a.core.is_idle() && s.node(current_of(a.core.state())) == Proc::Serving
                    }) && s.serving() == 1
                },
            ),
            Property::always("floor never decreases", |_, s: &Sys| !s.floor_lowered),
            Property::always("history records every finished upgrade", |_, s: &Sys| {
                !s.history_wrong
            }),
            Property::sometimes("an upgrade commits", |_, s: &Sys| {
                s.journal.current.mr_enclave == V2 && s.node(V2) == Proc::Serving
            }),
            Property::sometimes("a rollback is recorded in the history", |_, s: &Sys| {
                s.agent.as_ref().is_some_and(|a| {
                    matches!(
                        a.pending,
                        Action::Finished(dc_orchestrator::core::Outcome::RolledBack(_))
                    ) && a
                        .core
                        .state()
                        .history
                        .last()
                        .is_some_and(|e| e.outcome == UpgradeOutcome::RolledBack)
                })
            }),
            Property::sometimes("a rollback restores the old node", |_, s: &Sys| {
                s.journal.failed.contains_key(V2)
                    && s.journal.current.mr_enclave == V1
                    && s.node(V1) == Proc::Serving
                    && s.agent.as_ref().is_some_and(|a| a.core.is_idle())
            }),
        ]
    }
}

fn check(m: UpgradeModel) -> (impl Checker<UpgradeModel>, std::time::Duration) {
    let started = Instant::now();
    let c = m.checker().threads(2).spawn_bfs().join();
    (c, started.elapsed())
}

fn explore(mode: SwitchMode) {
    let (c, took) = check(UpgradeModel {
        mode,
        failures: 3,
        crashes: 2,
        restores: 1,
        stuck_stops: 1,
        plant: Plant::None,
    });
    eprintln!(
        "model ({mode:?}): {} states ({} unique), max depth {}, {:.1} s",
        c.state_count(),
        c.unique_state_count(),
        c.max_depth(),
        took.as_secs_f64()
    );
    for (name, path) in c.discoveries() {
        if !name.starts_with("an ") && !name.starts_with("a ") {
            eprintln!("{name}: {:#?}", path.last_state());
            eprintln!("{:?}", path.into_actions());
        }
    }
    c.assert_properties();
}

/// The bounded configuration `./scripts/test` runs, in both switch modes: three failed
/// actions, two agent crashes, one restore of an older journal, one stuck stop.
#[test]
fn make_before_break_keeps_every_property_under_crashes_restores_and_stuck_stops() {
    explore(SwitchMode::MakeBeforeBreak);
}

#[test]
fn break_before_make_keeps_every_property_under_crashes_restores_and_stuck_stops() {
    explore(SwitchMode::BreakBeforeMake);
}

/// The checker can fail: a driver that does not wait for the old node's exit lets two nodes
/// serve, and the checker shows the path.
#[test]
fn the_checker_finds_a_planted_bug() {
    let (c, _) = check(UpgradeModel {
        mode: SwitchMode::BreakBeforeMake,
        failures: 0,
        crashes: 0,
        restores: 0,
        stuck_stops: 1,
        plant: Plant::UnconfirmedStopReportedAsConfirmed,
    });
    let path = c
        .discovery("never two serving nodes")
        .expect("the planted bug is found");
    eprintln!("counterexample: {:?}", path.into_actions());
}

/// A driver that leaves an abandoned standby running: once the old node exits, the stale
/// standby takes the data directory and serves a release the journal does not name.
#[test]
fn the_checker_finds_a_standby_left_running() {
    let (c, _) = check(UpgradeModel {
        mode: SwitchMode::MakeBeforeBreak,
        failures: 1,
        crashes: 1,
        restores: 0,
        stuck_stops: 0,
        plant: Plant::StandbyLeftRunning,
    });
    let path = c
        .discovery("settles with one serving node")
        .expect("the planted bug is found");
    eprintln!("counterexample: {:?}", path.into_actions());
}
