//! The orchestrator core: every upgrade decision, as a pure state machine.
//!
//! ```text
//! Idle → Candidate → Downloaded → KeysAcquired → OldStopped → NewLaunched → KeysDelivered
//!      → Healthy → (commit) Idle;      any failure after OldStopped → RollingBack → Idle
//! ```
//!
//! The core is fed [`Event`]s (a release to install, the outcome of the action it asked for,
//! an agent restart, a timer) with the current time, and answers with exactly one [`Action`]
//! for the driver to carry out; the driver reports that action's outcome as the next event.
//! It opens no file or socket and reads no clock. Its whole persisted state is [`State`] —
//! what the journal holds — and every phase is written ([`Action::Persist`]) before the side
//! effect it names is asked for. What the core keeps besides ([`Step`]) is only where it
//! waits; after a crash it starts again from the journal alone ([`Event::Start`]).
//!
//! Rules, each checked by the model in `tests/model.rs`:
//! - before `OldStopped` the running node was never touched: a failure abandons the release
//!   (with backoff), a crash abandons it too;
//! - the old node is stopped only after `OldStopped` is durable, and the new one is launched
//!   only after the old one's exit is *confirmed*;
//! - from `OldStopped` on, a failure or a crash rolls back, and a rollback starts the old node
//!   only after the new one's exit is confirmed;
//! - only `Healthy` is committed, and a commit never lowers the version or ISVSVN floor.

use dc_handover::Version;

use crate::state::{
    Failure, HistoryEntry, Phase, Release, State, Upgrade, UpgradeOutcome, MARK_NEW_NODE_SERVING,
    MARK_OLD_NODE_EXITED,
};

/// Longest backoff after repeated failures of one release.
pub const MAX_BACKOFF_MS: u64 = 24 * 3600 * 1000;
/// Attempts to confirm a node's exit in one rollback before it halts (and is retried).
pub const STOP_ATTEMPTS: u8 = 3;

/// How the new node takes over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SwitchMode {
    /// The new node is launched as a standby and given the keys while the old one serves;
    /// only then is the old one drained and stopped, and the standby takes the data
    /// directory. A failure before the switch abandons the upgrade with no downtime.
    #[default]
    MakeBeforeBreak,
    /// The old node is stopped before the new one is launched (the earlier behaviour, kept for
    /// comparison and for platforms that cannot pass listening sockets).
    BreakBeforeMake,
}

/// Settings of the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Policy {
    /// Backoff after a release's first failure; doubled per further failure.
    pub retry_backoff_ms: u64,
    pub mode: SwitchMode,
}

/// A release a source offers, as far as the decisions need it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Offer {
    pub version: Version,
    /// MRENCLAVE, hex.
    pub mr_enclave: String,
    /// Signed ISVSVN, if the source signs one (feed records do; the chain does not).
    pub isv_svn: Option<u16>,
    /// Where it came from, for the journal and operators.
    pub source: String,
}

/// A downloaded release whose digest, measurement, evidence and policy checks passed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Verified {
    pub target: Release,
    pub isv_svn: u16,
}

/// The keys the agent holds, sealed, after the old node released them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Taken {
    /// Fingerprint of the received keyring, hex.
    pub fingerprint: String,
    /// SHA-256 of the probe written through the old node, hex.
    pub probe_sha256: String,
}

/// Why a step failed. The driver reports the detail its I/O produced.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum StepError {
    #[error("journal write failed, no further action taken: {0}")]
    Journal(String),
    #[error("release {version} refused: {reason}")]
    Refused { version: String, reason: String },
    #[error("the node exited during the download; it is restarted first and the release retried")]
    NodeExitedDuringDownload,
    #[error("taking the keys from the running node failed: {0}")]
    TakeKeys(String),
    #[error("the old node did not confirm its exit; the new one was not started")]
    OldNodeNotStopped,
    #[error("launching the new node failed: {0}")]
    Launch(String),
    #[error("{0}")]
    Delivery(String),
    #[error("the new node did not become ready: {0}")]
    NotReady(String),
    #[error("health check failed: {0}")]
    Health(String),
    #[error("the agent restarted during the upgrade")]
    AgentRestarted,
}

/// What the driver must do next. Each action but [`Action::Idle`] and
/// [`Action::Finished`] is answered by exactly one event.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Nothing to do until an offer, a restart or a timer.
    Idle,
    /// Write [`Orchestrator::state`] to the journal durably → [`Event::Persisted`].
    Persist,
    /// Download and verify the release → [`Event::Downloaded`].
    Download(Offer),
    /// Take the keys from the running node for the verified target, seal them in the agent
    /// → [`Event::KeysTaken`].
    TakeKeys,
    /// Stop the running node (the old one, or in a rollback the new one) and confirm its
    /// exit → [`Event::Stopped`].
    StopNode,
    /// Launch the target with the agent as its upgrader and serve it the keys
    /// → [`Event::Delivered`].
    LaunchNew,
    /// Make-before-break: launch the target as a standby beside the serving node (it takes
    /// the keys and seals them, serves nothing) → [`Event::Delivered`].
    LaunchStandby,
    /// Stop the standby and confirm its exit → [`Event::Stopped`].
    StopStandby,
    /// Drain and stop the serving (old) node and confirm its exit; the standby then takes
    /// the data directory and the listening socket → [`Event::Stopped`].
    Switch,
    /// Wait until the new node serves → [`Event::Ready`].
    AwaitReady,
    /// Check the new node's identity, keyring and the probe → [`Event::Health`].
    CheckHealth,
    /// Start the installed release's node → [`Event::Started`].
    StartCurrent,
    /// The upgrade (or recovery) ended; the core is idle or waits for a timer.
    Finished(Outcome),
}

/// How an upgrade ended.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The new release serves; it is the installed one.
    Committed { version: String },
    /// Given up before the running node was touched.
    Abandoned(StepError),
    /// The old node serves again.
    RolledBack(StepError),
    /// A rollback could not confirm the new node's exit, so the old node was not started;
    /// it is retried at the next [`Event::Tick`].
    RollbackHalted(StepError),
    /// Abandoning before the switch could not confirm the standby's exit; retried at the
    /// next [`Event::Tick`] (the old node keeps serving).
    StandbyStopHalted(StepError),
    /// Nothing was in progress.
    Nothing,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// The agent (re)started with the state the journal holds: recover from it.
    Start,
    /// Install this release (the driver picked it with [`Orchestrator::select`]).
    Begin(Offer),
    Persisted(Result<(), String>),
    Downloaded(Result<Verified, StepError>),
    KeysTaken(Result<Taken, StepError>),
    Stopped {
        confirmed: bool,
    },
    /// The new node acknowledged durable receipt of the keys (its MRENCLAVE), or why not.
    Delivered(Result<String, StepError>),
    Ready(Result<(), StepError>),
    Health(Result<(), StepError>),
    Started(Result<(), StepError>),
    /// Time passed (retries of a halted rollback).
    Tick,
}

/// An event the core did not expect in its step: a driver bug, never a host input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("event {event} is not expected while the orchestrator {step}")]
pub struct UnexpectedEvent {
    pub event: String,
    pub step: String,
}

/// Longest reason or source text a history entry keeps, in characters: the history stays far
/// below the journal's size limit however long the drivers' error details are.
pub const HISTORY_TEXT_LIMIT: usize = 512;

/// `s` cut to [`HISTORY_TEXT_LIMIT`] characters, marked with `…` if cut, and made safe
/// (peer text — a refusal message — lands here; see [`dc_handover::printable`]).
pub(crate) fn bounded(s: &str) -> String {
    let cut = dc_handover::printable(s, HISTORY_TEXT_LIMIT);
    if s.chars().nth(HISTORY_TEXT_LIMIT).is_some() {
        format!("{cut}…")
    } else {
        cut
    }
}

/// Where the core waits (not persisted).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    Idle,
    /// A journal write, then `then`; `strict` writes stop the upgrade if they fail.
    Persisting {
        then: Then,
        strict: bool,
    },
    Downloading,
    TakingKeys,
    StoppingOld,
    Delivering,
    AwaitingReady,
    CheckingHealth,
    /// A rollback first stops a standby, if one runs (make-before-break)…
    RollbackStoppingStandby {
        attempt: u8,
        reason: StepError,
    },
    /// …then the node.
    RollbackStopping {
        attempt: u8,
        reason: StepError,
    },
    RollbackStarting {
        reason: StepError,
    },
    RollbackHalted {
        reason: StepError,
    },
    LaunchingStandby,
    StoppingStandby {
        attempt: u8,
        reason: StepError,
    },
    StandbyHalted {
        reason: StepError,
    },
    SwitchingOver,
}

/// Which stop is being retried.
#[derive(Clone, Copy, Debug)]
enum Stopping {
    Standby,
    RollbackStandby,
    RollbackNode,
}

/// What follows a journal write.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Then {
    Download(Offer),
    TakeKeys,
    EnterOldStopped,
    StopOld,
    EnterStandby,
    LaunchStandby,
    EnterSwitching,
    Switch,
    LaunchNew,
    AwaitReady,
    Commit,
    RollbackStop(StepError),
    Finish(Outcome),
}

/// Why [`Orchestrator::select`] refused an offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The committee revoked its EnclaveID.
    Revoked,
    /// Below the highest version or ISVSVN ever trusted.
    BelowRollbackFloor,
}

impl Refusal {
    /// A stable code, for metrics.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Revoked => "revoked",
            Refusal::BelowRollbackFloor => "below_rollback_floor",
        }
    }
}

/// Refusals of offered releases, for operators, and the release to install if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub pick: Option<Offer>,
    /// Offers refused: why (for metrics) and the message (for the operator).
    pub refused: Vec<(Refusal, String)>,
}

/// The orchestrator: the journaled state and where it waits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Orchestrator {
    state: State,
    step: Step,
    policy: Policy,
}

impl Orchestrator {
    /// The core over the state the journal holds. Send [`Event::Start`] before anything else.
    pub fn new(state: State, policy: Policy) -> Self {
        Self {
            state,
            step: Step::Idle,
            policy,
        }
    }

    /// The state to persist (the journal's content).
    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn step(&self) -> &Step {
        &self.step
    }

    /// Whether no upgrade is in progress (a new one may begin).
    pub fn is_idle(&self) -> bool {
        self.step == Step::Idle && self.state.phase == Phase::Idle
    }

    /// Whether a stop could not be confirmed and waits for [`Event::Tick`] to retry.
    pub fn is_halted(&self) -> bool {
        matches!(
            self.step,
            Step::RollbackHalted { .. } | Step::StandbyHalted { .. }
        )
    }

    /// The journal name of a phase (`old_stopped`, …), as crash points and timelines use it.
    pub fn phase_name(p: Phase) -> &'static str {
        p.as_str()
    }

    /// Records a committee revocation (outside an upgrade); `true` if new. Persist after.
    pub fn note_revoked(&mut self, mr_enclave: &str) -> bool {
        self.state.revoked.insert(mr_enclave.to_string())
    }

    /// Operator pause; `true` if it changed. Persist after.
    pub fn set_paused(&mut self, paused: bool) -> bool {
        let changed = self.state.paused != paused;
        self.state.paused = paused;
        changed
    }

    /// Picks the highest offered release above the current one that is not revoked, not
    /// below anything ever trusted (version or signed ISVSVN) and not in backoff. Refusals
    /// are returned for the operator; releases at or below the current one are ignored.
    pub fn select(&self, offers: &[Offer], now_ms: u64) -> Selection {
        let mut sel = Selection::default();
        let Ok(current) = self.state.current.version.parse::<Version>() else {
            return sel;
        };
        let highest: Version = self.state.highest_trusted.parse().unwrap_or(current);
        let mut offers: Vec<&Offer> = offers.iter().collect();
        offers.sort_by_key(|o| std::cmp::Reverse(o.version));
        for o in offers {
            if self.state.revoked.contains(&o.mr_enclave) {
                sel.refused.push((
                    Refusal::Revoked,
                    format!(
                        "release {} ({}) refused: revoked by the committee",
                        o.version, o.mr_enclave
                    ),
                ));
                continue;
            }
            if o.version < highest || o.isv_svn.is_some_and(|s| s < self.state.highest_isv_svn) {
                sel.refused.push((Refusal::BelowRollbackFloor, format!(
                    "release {} ({}) from {} refused: lower than the highest version ever trusted ({highest}, ISVSVN {}); keys never go to a lower version",
                    o.version, o.mr_enclave, o.source, self.state.highest_isv_svn
                )));
                continue;
            }
            if o.version <= current || sel.pick.is_some() {
                continue;
            }
            let backing_off = self
                .state
                .failed
                .get(&o.mr_enclave)
                .is_some_and(|f| now_ms < f.retry_after_ms);
            if !backing_off {
                sel.pick = Some(o.clone());
            }
        }
        sel
    }

    /// Feeds one event; returns the one action to carry out.
    pub fn handle(&mut self, event: Event, now_ms: u64) -> Result<Action, UnexpectedEvent> {
        let step = std::mem::replace(&mut self.step, Step::Idle);
        let unexpected = |event: &Event, step: &Step| UnexpectedEvent {
            event: format!("{event:?}"),
            step: format!("{step:?}"),
        };
        let action = match (step, event) {
            (Step::Idle, Event::Start) => self.recover(now_ms),
            (Step::Idle, Event::Begin(offer)) if self.state.phase == Phase::Idle => {
                self.state.timeline.clear();
                self.state.upgrade = Some(Upgrade {
                    target_version: offer.version.to_string(),
                    target_mr_enclave: offer.mr_enclave.clone(),
                    target: None,
                    keyring_fingerprint: None,
                    probe_sha256: None,
                    started_at_ms: now_ms,
                    source: offer.source.clone(),
                    target_isv_svn: None,
                });
                let note = format!(
                    "{} {} from {}",
                    offer.version, offer.mr_enclave, offer.source
                );
                self.enter(Phase::Candidate, note, now_ms, true, Then::Download(offer))
            }
            (Step::Idle, Event::Tick) => Action::Idle,
            (Step::RollbackHalted { reason }, Event::Tick) => {
                self.step = Step::RollbackStoppingStandby { attempt: 0, reason };
                Action::StopStandby
            }
            (Step::StandbyHalted { reason }, Event::Tick) => {
                self.step = Step::StoppingStandby { attempt: 0, reason };
                Action::StopStandby
            }
            (Step::Persisting { then, strict }, Event::Persisted(r)) => match r {
                Ok(()) => self.then(then, now_ms),
                Err(e) if strict => {
                    let e = StepError::Journal(e);
                    if self.state.phase.old_node_may_be_stopped() {
                        self.rollback(e, now_ms)
                    } else if matches!(
                        self.state.phase,
                        Phase::StandbyLaunched | Phase::StandbyReady
                    ) {
                        self.abandon_standby(e, now_ms)
                    } else {
                        self.give_up(e, now_ms)
                    }
                }
                // Best-effort writes (abandoning, rolling back) move towards the old node
                // whether or not they are durable.
                Err(_) => self.then(then, now_ms),
            },
            (Step::Downloading, Event::Downloaded(r)) => match r {
                Ok(v) => {
                    let note = format!("digest and measurement verified (ISVSVN {})", v.isv_svn);
                    let u = self.upgrade_mut();
                    u.target = Some(v.target);
                    u.target_isv_svn = Some(v.isv_svn);
                    self.enter(Phase::Downloaded, note, now_ms, true, Then::TakeKeys)
                }
                Err(StepError::NodeExitedDuringDownload) => {
                    // Not the release's fault: no backoff.
                    let e = StepError::NodeExitedDuringDownload;
                    self.finish(e.to_string(), now_ms, Outcome::Abandoned(e))
                }
                Err(e) => self.give_up(e, now_ms),
            },
            (Step::TakingKeys, Event::KeysTaken(r)) => match r {
                Ok(t) => {
                    let note = format!(
                        "keyring {} sealed in the agent",
                        t.fingerprint.get(..16).unwrap_or(&t.fingerprint)
                    );
                    let u = self.upgrade_mut();
                    u.keyring_fingerprint = Some(t.fingerprint);
                    u.probe_sha256 = Some(t.probe_sha256);
                    let then = match self.policy.mode {
                        SwitchMode::MakeBeforeBreak => Then::EnterStandby,
                        SwitchMode::BreakBeforeMake => Then::EnterOldStopped,
                    };
                    self.enter(Phase::KeysAcquired, note, now_ms, true, then)
                }
                Err(e) => self.give_up(e, now_ms),
            },
            (Step::StoppingOld, Event::Stopped { confirmed }) => {
                if !confirmed {
                    // The old node may still serve: never start the new one beside it.
                    self.give_up(StepError::OldNodeNotStopped, now_ms)
                } else {
                    self.state.mark(MARK_OLD_NODE_EXITED, now_ms, "");
                    self.enter(Phase::NewLaunched, "", now_ms, true, Then::LaunchNew)
                }
            }
            (Step::LaunchingStandby, Event::Delivered(r)) => match r {
                Ok(receiver) => self.enter(
                    Phase::StandbyReady,
                    format!("standby {receiver} sealed the keys; the old node still serves"),
                    now_ms,
                    true,
                    Then::EnterSwitching,
                ),
                // The old node never stopped: abandon with no downtime.
                Err(e) => self.abandon_standby(e, now_ms),
            },
            (Step::SwitchingOver, Event::Stopped { confirmed }) => {
                if confirmed {
                    self.state.mark(MARK_OLD_NODE_EXITED, now_ms, "");
                    self.step = Step::AwaitingReady;
                    Action::AwaitReady
                } else {
                    // The old node may still serve: the standby must not take over.
                    self.abandon_standby(StepError::OldNodeNotStopped, now_ms)
                }
            }
            (Step::StoppingStandby { attempt, reason }, Event::Stopped { confirmed }) => {
                if confirmed {
                    self.finish(reason.to_string(), now_ms, Outcome::Abandoned(reason))
                } else {
                    self.stop_again(attempt, reason, Stopping::Standby)
                }
            }
            (Step::Delivering, Event::Delivered(r)) => match r {
                Ok(receiver) => self.enter(
                    Phase::KeysDelivered,
                    format!("attested receiver {receiver}"),
                    now_ms,
                    true,
                    Then::AwaitReady,
                ),
                Err(e) => self.rollback(e, now_ms),
            },
            (Step::AwaitingReady, Event::Ready(r)) => match r {
                Ok(()) => {
                    self.state.mark(MARK_NEW_NODE_SERVING, now_ms, "");
                    self.step = Step::CheckingHealth;
                    Action::CheckHealth
                }
                Err(e) => self.rollback(e, now_ms),
            },
            (Step::CheckingHealth, Event::Health(r)) => match r {
                Ok(()) => self.enter(
                    Phase::Healthy,
                    "identity, keyring and old data verified",
                    now_ms,
                    true,
                    Then::Commit,
                ),
                Err(e) => self.rollback(e, now_ms),
            },
            (Step::RollbackStoppingStandby { attempt, reason }, Event::Stopped { confirmed }) => {
                if confirmed {
                    self.step = Step::RollbackStopping { attempt: 0, reason };
                    Action::StopNode
                } else {
                    self.stop_again(attempt, reason, Stopping::RollbackStandby)
                }
            }
            (Step::RollbackStopping { attempt, reason }, Event::Stopped { confirmed }) => {
                if confirmed {
                    self.step = Step::RollbackStarting { reason };
                    Action::StartCurrent
                } else {
                    self.stop_again(attempt, reason, Stopping::RollbackNode)
                }
            }
            (Step::RollbackStarting { reason }, Event::Started(_)) => {
                // If the old node did not start, the driver's supervision restarts it.
                self.finish("rolled back", now_ms, Outcome::RolledBack(reason))
            }
            (step, event) => {
                let e = unexpected(&event, &step);
                self.step = step;
                return Err(e);
            }
        };
        Ok(action)
    }

    /// After a restart, from the journal alone.
    fn recover(&mut self, now_ms: u64) -> Action {
        match self.state.phase {
            Phase::Idle => Action::Finished(Outcome::Nothing),
            // The new node proved itself before the restart.
            Phase::Healthy => self.commit(now_ms),
            p if p.old_node_may_be_stopped() => self.rollback(StepError::AgentRestarted, now_ms),
            Phase::StandbyLaunched | Phase::StandbyReady => {
                self.abandon_standby(StepError::AgentRestarted, now_ms)
            }
            _ => self.give_up(StepError::AgentRestarted, now_ms),
        }
    }

    fn then(&mut self, then: Then, now_ms: u64) -> Action {
        match then {
            Then::Download(offer) => {
                self.step = Step::Downloading;
                Action::Download(offer)
            }
            Then::TakeKeys => {
                self.step = Step::TakingKeys;
                Action::TakeKeys
            }
            // Write-ahead: if this cannot be recorded, the old node is not touched.
            Then::EnterOldStopped => self.enter(
                Phase::OldStopped,
                "stopping the old node",
                now_ms,
                true,
                Then::StopOld,
            ),
            Then::StopOld => {
                self.step = Step::StoppingOld;
                Action::StopNode
            }
            Then::EnterStandby => self.enter(
                Phase::StandbyLaunched,
                "launching the new node as a standby; the old node keeps serving",
                now_ms,
                true,
                Then::LaunchStandby,
            ),
            Then::LaunchStandby => {
                self.step = Step::LaunchingStandby;
                Action::LaunchStandby
            }
            // Write-ahead: the old node is drained only once this is durable.
            Then::EnterSwitching => self.enter(
                Phase::Switching,
                "draining the old node; the standby takes over",
                now_ms,
                true,
                Then::Switch,
            ),
            Then::Switch => {
                self.step = Step::SwitchingOver;
                Action::Switch
            }
            Then::LaunchNew => {
                self.step = Step::Delivering;
                Action::LaunchNew
            }
            Then::AwaitReady => {
                self.step = Step::AwaitingReady;
                Action::AwaitReady
            }
            Then::Commit => self.commit(now_ms),
            // A standby that still waits for the data directory would take it as soon as the
            // old node is gone: it goes first.
            Then::RollbackStop(reason) => {
                self.step = Step::RollbackStoppingStandby { attempt: 0, reason };
                Action::StopStandby
            }
            Then::Finish(outcome) => {
                self.step = Step::Idle;
                Action::Finished(outcome)
            }
        }
    }

    /// Records `phase`, then asks for the journal write; `then` follows it.
    fn enter(
        &mut self,
        phase: Phase,
        note: impl Into<String>,
        now_ms: u64,
        strict: bool,
        then: Then,
    ) -> Action {
        self.state.phase = phase;
        self.state.mark(phase.as_str(), now_ms, note);
        self.step = Step::Persisting { then, strict };
        Action::Persist
    }

    fn upgrade_mut(&mut self) -> &mut Upgrade {
        // Every step that calls this runs inside an upgrade begun by `Begin`.
        self.state.upgrade.get_or_insert_with(|| Upgrade {
            target_version: String::new(),
            target_mr_enclave: String::new(),
            target: None,
            keyring_fingerprint: None,
            probe_sha256: None,
            started_at_ms: 0,
            source: String::new(),
            target_isv_svn: None,
        })
    }

    /// Abandons the release before the old node was touched, with backoff.
    fn give_up(&mut self, reason: StepError, now_ms: u64) -> Action {
        self.record_failure(&reason, now_ms);
        self.finish(reason.to_string(), now_ms, Outcome::Abandoned(reason))
    }

    /// The upgrade in progress ended without a commit: into the history, back to idle
    /// (written best effort: it moves toward the old node anyway).
    fn finish(&mut self, note: impl Into<String>, now_ms: u64, outcome: Outcome) -> Action {
        if let Some(u) = self.state.upgrade.take() {
            self.record_history(&u, &outcome, now_ms);
        }
        self.enter(Phase::Idle, note, now_ms, false, Then::Finish(outcome))
    }

    /// Appends the upgrade `u`, ending now with `outcome`, to the history. Call before a
    /// commit replaces the installed release (it is the upgrade's "from").
    fn record_history(&mut self, u: &Upgrade, outcome: &Outcome, now_ms: u64) {
        let (kind, reason) = match outcome {
            Outcome::Committed { .. } => (UpgradeOutcome::Committed, String::new()),
            Outcome::Abandoned(e @ StepError::Refused { .. }) => {
                (UpgradeOutcome::Refused, e.to_string())
            }
            Outcome::Abandoned(e) => (UpgradeOutcome::Abandoned, e.to_string()),
            Outcome::RolledBack(e) => (UpgradeOutcome::RolledBack, e.to_string()),
            // Not an end: a halted stop is retried; nothing was in progress.
            Outcome::RollbackHalted(_) | Outcome::StandbyStopHalted(_) | Outcome::Nothing => return,
        };
        // A commit's node served from `new_node_serving` on; anything else serves the old
        // node again (or never stopped it) by now.
        let served_again = (kind != UpgradeOutcome::Committed).then_some(now_ms);
        let entry = HistoryEntry {
            from_version: self.state.current.version.clone(),
            from_mr_enclave: self.state.current.mr_enclave.clone(),
            to_version: u.target_version.clone(),
            to_mr_enclave: u.target_mr_enclave.clone(),
            source: bounded(&u.source),
            outcome: kind,
            reason: bounded(&reason),
            started_at_ms: u.started_at_ms,
            ended_at_ms: now_ms,
            duration_ms: now_ms.saturating_sub(u.started_at_ms),
            downtime_ms: self.state.downtime_ms(served_again),
        };
        self.state.record(entry);
    }

    /// An unconfirmed stop: try again, up to [`STOP_ATTEMPTS`]; then halt until a tick. Never
    /// start or promote anything beside a process that may still run.
    fn stop_again(&mut self, attempt: u8, reason: StepError, what: Stopping) -> Action {
        let attempt = attempt + 1;
        if attempt < STOP_ATTEMPTS {
            let (step, action) = match what {
                Stopping::Standby => (
                    Step::StoppingStandby { attempt, reason },
                    Action::StopStandby,
                ),
                Stopping::RollbackStandby => (
                    Step::RollbackStoppingStandby { attempt, reason },
                    Action::StopStandby,
                ),
                Stopping::RollbackNode => {
                    (Step::RollbackStopping { attempt, reason }, Action::StopNode)
                }
            };
            self.step = step;
            return action;
        }
        let outcome = match what {
            Stopping::Standby => {
                self.step = Step::StandbyHalted {
                    reason: reason.clone(),
                };
                Outcome::StandbyStopHalted(reason)
            }
            Stopping::RollbackStandby | Stopping::RollbackNode => {
                self.step = Step::RollbackHalted {
                    reason: reason.clone(),
                };
                Outcome::RollbackHalted(reason)
            }
        };
        Action::Finished(outcome)
    }

    /// Before the switch (make-before-break): the old node still serves; stop the standby,
    /// confirmed, and give the release up with backoff.
    fn abandon_standby(&mut self, reason: StepError, now_ms: u64) -> Action {
        self.record_failure(&reason, now_ms);
        self.step = Step::StoppingStandby { attempt: 0, reason };
        Action::StopStandby
    }

    /// From `OldStopped` on: stop the new node, then start the old one.
    fn rollback(&mut self, reason: StepError, now_ms: u64) -> Action {
        self.record_failure(&reason, now_ms);
        self.enter(
            Phase::RollingBack,
            reason.to_string(),
            now_ms,
            false,
            Then::RollbackStop(reason),
        )
    }

    fn record_failure(&mut self, reason: &StepError, now_ms: u64) {
        let Some(u) = &self.state.upgrade else { return };
        let (mre, version) = (u.target_mr_enclave.clone(), u.target_version.clone());
        let attempts = self.state.failed.get(&mre).map_or(0, |f| f.attempts) + 1;
        let backoff = self
            .policy
            .retry_backoff_ms
            .saturating_mul(1 << attempts.min(10))
            .min(MAX_BACKOFF_MS);
        self.state.failed.insert(
            mre,
            Failure {
                version,
                attempts,
                retry_after_ms: now_ms.saturating_add(backoff),
                reason: bounded(&reason.to_string()),
            },
        );
    }

    /// The new release becomes the installed one; the floors only go up.
    fn commit(&mut self, now_ms: u64) -> Action {
        let upgrade = self.state.upgrade.take();
        let Some((target, isv_svn)) = upgrade
            .as_ref()
            .and_then(|u| u.target.clone().map(|t| (t, u.target_isv_svn)))
        else {
            return self.enter(
                Phase::Idle,
                "commit without a verified target; back to idle",
                now_ms,
                false,
                Then::Finish(Outcome::Nothing),
            );
        };
        let newer = match (
            target.version.parse::<Version>(),
            self.state.highest_trusted.parse::<Version>(),
        ) {
            (Ok(t), Ok(h)) => t > h,
            _ => true,
        };
        if newer {
            self.state.highest_trusted = target.version.clone();
        }
        if let Some(svn) = isv_svn {
            self.state.highest_isv_svn = self.state.highest_isv_svn.max(svn);
        }
        self.state.failed.remove(&target.mr_enclave);
        let version = target.version.clone();
        if let Some(u) = &upgrade {
            let outcome = Outcome::Committed {
                version: version.clone(),
            };
            self.record_history(u, &outcome, now_ms);
        }
        self.state.current = target;
        self.state.upgrades_completed += 1;
        self.enter(
            Phase::Idle,
            "committed",
            now_ms,
            false,
            Then::Finish(Outcome::Committed { version }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn release(v: &str, m: &str) -> Release {
        Release {
            version: v.into(),
            mr_enclave: m.into(),
            bundle_dir: PathBuf::from(format!("/b/{m}")),
            record: None,
        }
    }

    fn offer(v: &str, m: &str) -> Offer {
        Offer {
            version: v.parse().unwrap(),
            mr_enclave: m.into(),
            isv_svn: Some(2),
            source: "feed".into(),
        }
    }

    fn core() -> Orchestrator {
        let mut c = Orchestrator::new(
            State::new(release("1.0.0", "aa")),
            Policy {
                retry_backoff_ms: 1000,
                mode: SwitchMode::BreakBeforeMake,
            },
        );
        assert_eq!(
            c.handle(Event::Start, 0).unwrap(),
            Action::Finished(Outcome::Nothing)
        );
        c
    }

    /// Drives one upgrade where every action succeeds; returns the actions asked for.
    fn happy(c: &mut Orchestrator) -> Vec<Action> {
        let mut seen = vec![];
        let mut a = c.handle(Event::Begin(offer("2.0.0", "bb")), 1).unwrap();
        loop {
            seen.push(a.clone());
            let ev = match a {
                Action::Persist => Event::Persisted(Ok(())),
                Action::Download(_) => Event::Downloaded(Ok(Verified {
                    target: release("2.0.0", "bb"),
                    isv_svn: 2,
                })),
                Action::TakeKeys => Event::KeysTaken(Ok(Taken {
                    fingerprint: "f".repeat(64),
                    probe_sha256: "p".into(),
                })),
                Action::StopNode => Event::Stopped { confirmed: true },
                Action::LaunchNew | Action::LaunchStandby => Event::Delivered(Ok("bb".into())),
                Action::StopStandby | Action::Switch => Event::Stopped { confirmed: true },
                Action::AwaitReady => Event::Ready(Ok(())),
                Action::CheckHealth => Event::Health(Ok(())),
                Action::StartCurrent => Event::Started(Ok(())),
                Action::Finished(_) | Action::Idle => return seen,
            };
            a = c.handle(ev, 2).unwrap();
        }
    }

    #[test]
    fn a_whole_upgrade_journals_each_phase_before_its_action_and_commits() {
        let mut c = core();
        let seen = happy(&mut c);
        use Action::*;
        assert_eq!(
            seen,
            vec![
                Persist, // candidate
                Download(offer("2.0.0", "bb")),
                Persist, // downloaded
                TakeKeys,
                Persist, // keys acquired
                Persist, // old stopped
                StopNode,
                Persist, // new launched
                LaunchNew,
                Persist, // keys delivered
                AwaitReady,
                CheckHealth,
                Persist, // healthy
                Persist, // idle
                Finished(Outcome::Committed {
                    version: "2.0.0".into()
                }),
            ]
        );
        let s = c.state();
        assert_eq!(s.current.version, "2.0.0");
        assert_eq!(s.highest_trusted, "2.0.0");
        assert_eq!(s.highest_isv_svn, 2);
        assert_eq!(s.phase, Phase::Idle);
        assert!(s.upgrade.is_none() && c.is_idle());
    }

    #[test]
    fn an_unconfirmed_stop_never_launches_the_new_node() {
        let mut c = core();
        let mut a = c.handle(Event::Begin(offer("2.0.0", "bb")), 1).unwrap();
        while a != Action::StopNode {
            a = match a {
                Action::Persist => c.handle(Event::Persisted(Ok(())), 2),
                Action::Download(_) => c.handle(
                    Event::Downloaded(Ok(Verified {
                        target: release("2.0.0", "bb"),
                        isv_svn: 2,
                    })),
                    2,
                ),
                Action::TakeKeys => c.handle(
                    Event::KeysTaken(Ok(Taken {
                        fingerprint: "f".into(),
                        probe_sha256: "p".into(),
                    })),
                    2,
                ),
                other => panic!("{other:?}"),
            }
            .unwrap();
        }
        assert_eq!(
            c.handle(Event::Stopped { confirmed: false }, 3).unwrap(),
            Action::Persist
        );
        let a = c.handle(Event::Persisted(Ok(())), 3).unwrap();
        assert_eq!(
            a,
            Action::Finished(Outcome::Abandoned(StepError::OldNodeNotStopped))
        );
        assert_eq!(c.state().current.version, "1.0.0");
        assert_eq!(c.state().failed["bb"].attempts, 1);
    }

    #[test]
    fn a_rollback_halts_until_the_new_node_exit_is_confirmed() {
        let mut c = core();
        let mut a = c.handle(Event::Begin(offer("2.0.0", "bb")), 1).unwrap();
        loop {
            a = match a {
                Action::Persist => c.handle(Event::Persisted(Ok(())), 2),
                Action::Download(_) => c.handle(
                    Event::Downloaded(Ok(Verified {
                        target: release("2.0.0", "bb"),
                        isv_svn: 2,
                    })),
                    2,
                ),
                Action::TakeKeys => c.handle(
                    Event::KeysTaken(Ok(Taken {
                        fingerprint: "f".into(),
                        probe_sha256: "p".into(),
                    })),
                    2,
                ),
                Action::StopNode => c.handle(Event::Stopped { confirmed: true }, 2),
                Action::LaunchNew => {
                    break;
                }
                other => panic!("{other:?}"),
            }
            .unwrap();
        }
        let a = c
            .handle(
                Event::Delivered(Err(StepError::Delivery("crashed".into()))),
                3,
            )
            .unwrap();
        assert_eq!(a, Action::Persist);
        assert_eq!(c.state().phase, Phase::RollingBack);
        assert_eq!(
            c.handle(Event::Persisted(Ok(())), 3).unwrap(),
            Action::StopStandby
        );
        assert_eq!(
            c.handle(Event::Stopped { confirmed: true }, 3).unwrap(),
            Action::StopNode
        );
        for _ in 1..STOP_ATTEMPTS {
            assert_eq!(
                c.handle(Event::Stopped { confirmed: false }, 3).unwrap(),
                Action::StopNode
            );
        }
        let a = c.handle(Event::Stopped { confirmed: false }, 3).unwrap();
        assert!(matches!(a, Action::Finished(Outcome::RollbackHalted(_))));
        assert_eq!(c.state().phase, Phase::RollingBack, "not idle while halted");
        assert_eq!(c.handle(Event::Tick, 4).unwrap(), Action::StopStandby);
        assert_eq!(
            c.handle(Event::Stopped { confirmed: true }, 4).unwrap(),
            Action::StopNode
        );
        assert_eq!(
            c.handle(Event::Stopped { confirmed: true }, 4).unwrap(),
            Action::StartCurrent
        );
        assert_eq!(
            c.handle(Event::Started(Ok(())), 4).unwrap(),
            Action::Persist
        );
        assert!(matches!(
            c.handle(Event::Persisted(Err("disk full".into())), 4)
                .unwrap(),
            Action::Finished(Outcome::RolledBack(_))
        ));
        assert_eq!(c.state().current.version, "1.0.0");
        assert_eq!(c.state().highest_trusted, "1.0.0");
    }

    #[test]
    fn a_failed_strict_write_stops_before_the_side_effect() {
        let mut c = core();
        assert_eq!(
            c.handle(Event::Begin(offer("2.0.0", "bb")), 1).unwrap(),
            Action::Persist
        );
        let a = c.handle(Event::Persisted(Err("EIO".into())), 1).unwrap();
        assert_eq!(a, Action::Persist, "abandoning is journaled, best effort");
        assert!(matches!(
            c.handle(Event::Persisted(Ok(())), 1).unwrap(),
            Action::Finished(Outcome::Abandoned(StepError::Journal(_)))
        ));
    }

    #[test]
    fn recovery_follows_the_journal_alone() {
        for (phase, expect) in [
            (Phase::Candidate, "abandon"),
            (Phase::Downloaded, "abandon"),
            (Phase::KeysAcquired, "abandon"),
            (Phase::OldStopped, "rollback"),
            (Phase::NewLaunched, "rollback"),
            (Phase::KeysDelivered, "rollback"),
            (Phase::RollingBack, "rollback"),
            (Phase::Healthy, "commit"),
        ] {
            let mut s = State::new(release("1.0.0", "aa"));
            s.phase = phase;
            s.upgrade = Some(Upgrade {
                target_version: "2.0.0".into(),
                target_mr_enclave: "bb".into(),
                target: Some(release("2.0.0", "bb")),
                keyring_fingerprint: None,
                probe_sha256: None,
                started_at_ms: 0,
                source: String::new(),
                target_isv_svn: Some(2),
            });
            let mut c = Orchestrator::new(
                s,
                Policy {
                    retry_backoff_ms: 1,
                    mode: SwitchMode::BreakBeforeMake,
                },
            );
            assert_eq!(c.handle(Event::Start, 5).unwrap(), Action::Persist);
            let next = c.handle(Event::Persisted(Ok(())), 5).unwrap();
            match expect {
                "abandon" => assert!(matches!(
                    next,
                    Action::Finished(Outcome::Abandoned(StepError::AgentRestarted))
                )),
                "rollback" => assert_eq!(next, Action::StopStandby, "{phase:?}"),
                _ => {
                    assert!(matches!(next, Action::Finished(Outcome::Committed { .. })));
                    assert_eq!(c.state().current.version, "2.0.0");
                }
            }
        }
    }

    #[test]
    fn selection_applies_floors_revocations_and_backoff() {
        let mut c = core();
        c.note_revoked("cc");
        let offers = [
            offer("0.9.0", "00"),
            offer("3.0.0", "cc"),
            offer("2.0.0", "bb"),
            offer("1.0.0", "aa"),
        ];
        let sel = c.select(&offers, 0);
        assert_eq!(sel.pick.as_ref().map(|o| o.mr_enclave.as_str()), Some("bb"));
        assert_eq!(sel.refused.len(), 2, "{:?}", sel.refused);
        // A failed release waits for its backoff.
        let _ = c.handle(Event::Begin(offer("2.0.0", "bb")), 10).unwrap();
        let _ = c.handle(Event::Persisted(Ok(())), 10).unwrap();
        let _ = c
            .handle(
                Event::Downloaded(Err(StepError::Refused {
                    version: "2.0.0".into(),
                    reason: "digest".into(),
                })),
                10,
            )
            .unwrap();
        let _ = c.handle(Event::Persisted(Ok(())), 10).unwrap();
        assert!(c.select(&offers, 11).pick.is_none());
        assert!(c.select(&offers, 10 + 2000).pick.is_some());
        // Unexpected events are errors, not panics, and change nothing.
        let before = c.clone();
        assert!(c.handle(Event::Stopped { confirmed: true }, 12).is_err());
        assert_eq!(c, before);
    }

    fn mbb() -> Orchestrator {
        let mut c = Orchestrator::new(
            State::new(release("1.0.0", "aa")),
            Policy {
                retry_backoff_ms: 1000,
                mode: SwitchMode::MakeBeforeBreak,
            },
        );
        c.handle(Event::Start, 0).unwrap();
        c
    }

    #[test]
    fn make_before_break_gives_the_standby_the_keys_before_the_old_node_stops() {
        let mut c = mbb();
        let seen = happy(&mut c);
        use Action::*;
        assert_eq!(
            seen,
            vec![
                Persist, // candidate
                Download(offer("2.0.0", "bb")),
                Persist, // downloaded
                TakeKeys,
                Persist, // keys acquired
                Persist, // standby launched
                LaunchStandby,
                Persist, // standby ready
                Persist, // switching
                Switch,
                AwaitReady,
                CheckHealth,
                Persist, // healthy
                Persist, // idle
                Finished(Outcome::Committed {
                    version: "2.0.0".into()
                }),
            ]
        );
        assert_eq!(c.state().current.version, "2.0.0");
    }

    /// Drives a make-before-break upgrade until the core asks for `stop_at`.
    fn until(c: &mut Orchestrator, stop_at: &Action) {
        let mut a = c.handle(Event::Begin(offer("2.0.0", "bb")), 1).unwrap();
        while &a != stop_at {
            let ev = match a {
                Action::Persist => Event::Persisted(Ok(())),
                Action::Download(_) => Event::Downloaded(Ok(Verified {
                    target: release("2.0.0", "bb"),
                    isv_svn: 2,
                })),
                Action::TakeKeys => Event::KeysTaken(Ok(Taken {
                    fingerprint: "f".into(),
                    probe_sha256: "p".into(),
                })),
                Action::LaunchStandby => Event::Delivered(Ok("bb".into())),
                other => panic!("{other:?}"),
            };
            a = c.handle(ev, 2).unwrap();
        }
    }

    #[test]
    fn a_standby_that_fails_is_abandoned_and_the_old_node_never_stops() {
        let mut c = mbb();
        until(&mut c, &Action::LaunchStandby);
        let a = c
            .handle(
                Event::Delivered(Err(StepError::Delivery("refused".into()))),
                3,
            )
            .unwrap();
        assert_eq!(a, Action::StopStandby, "the standby goes, not the old node");
        assert_eq!(
            c.handle(Event::Stopped { confirmed: true }, 3).unwrap(),
            Action::Persist
        );
        assert!(matches!(
            c.handle(Event::Persisted(Ok(())), 3).unwrap(),
            Action::Finished(Outcome::Abandoned(StepError::Delivery(_)))
        ));
        assert!(c.is_idle());
        assert_eq!(c.state().current.version, "1.0.0");
        assert!(!c
            .state()
            .timeline
            .iter()
            .any(|e| e.phase == "switching" || e.phase == "old_node_exited"));
        // A stop of the old node that is not confirmed: the standby does not take over.
        let mut c = mbb();
        until(&mut c, &Action::Switch);
        assert_eq!(
            c.handle(Event::Stopped { confirmed: false }, 4).unwrap(),
            Action::StopStandby
        );
        // A standby whose exit cannot be confirmed halts, and is retried on a tick.
        for _ in 1..STOP_ATTEMPTS {
            assert_eq!(
                c.handle(Event::Stopped { confirmed: false }, 4).unwrap(),
                Action::StopStandby
            );
        }
        assert!(matches!(
            c.handle(Event::Stopped { confirmed: false }, 4).unwrap(),
            Action::Finished(Outcome::StandbyStopHalted(_))
        ));
        assert!(c.is_halted());
        assert_eq!(c.handle(Event::Tick, 5).unwrap(), Action::StopStandby);
    }

    #[test]
    fn after_the_switch_a_failure_rolls_back_and_a_restart_before_it_abandons() {
        let mut c = mbb();
        until(&mut c, &Action::Switch);
        assert_eq!(
            c.handle(Event::Stopped { confirmed: true }, 4).unwrap(),
            Action::AwaitReady
        );
        assert_eq!(
            c.handle(Event::Ready(Err(StepError::NotReady("crash".into()))), 4)
                .unwrap(),
            Action::Persist
        );
        assert_eq!(c.state().phase, Phase::RollingBack);
        for (phase, expect_stop) in [
            (Phase::StandbyLaunched, Action::StopStandby),
            (Phase::StandbyReady, Action::StopStandby),
            (Phase::Switching, Action::StopStandby),
        ] {
            let mut s = State::new(release("1.0.0", "aa"));
            s.phase = phase;
            let mut c = Orchestrator::new(
                s,
                Policy {
                    retry_backoff_ms: 1,
                    mode: SwitchMode::MakeBeforeBreak,
                },
            );
            let first = c.handle(Event::Start, 5).unwrap();
            let first = if first == Action::Persist {
                c.handle(Event::Persisted(Ok(())), 5).unwrap()
            } else {
                first
            };
            assert_eq!(first, expect_stop, "{phase:?}");
        }
    }

    /// Drives one upgrade of 2.0.0 from `t0`, the clock advancing 10 ms per event, every
    /// action succeeding unless `fail` answers it with another event. Returns the outcome.
    fn drive(
        c: &mut Orchestrator,
        t0: u64,
        mut fail: impl FnMut(&Action) -> Option<Event>,
    ) -> Outcome {
        let mut t = t0;
        let mut a = c.handle(Event::Begin(offer("2.0.0", "bb")), t).unwrap();
        loop {
            t += 10;
            let ev = match fail(&a) {
                Some(ev) => ev,
                None => match &a {
                    Action::Persist => Event::Persisted(Ok(())),
                    Action::Download(_) => Event::Downloaded(Ok(Verified {
                        target: release("2.0.0", "bb"),
                        isv_svn: 2,
                    })),
                    Action::TakeKeys => Event::KeysTaken(Ok(Taken {
                        fingerprint: "f".into(),
                        probe_sha256: "p".into(),
                    })),
                    Action::LaunchNew | Action::LaunchStandby => Event::Delivered(Ok("bb".into())),
                    Action::StopNode | Action::StopStandby | Action::Switch => {
                        Event::Stopped { confirmed: true }
                    }
                    Action::AwaitReady => Event::Ready(Ok(())),
                    Action::CheckHealth => Event::Health(Ok(())),
                    Action::StartCurrent => Event::Started(Ok(())),
                    Action::Finished(o) => return o.clone(),
                    Action::Idle => return Outcome::Nothing,
                },
            };
            a = c.handle(ev, t).unwrap();
        }
    }

    fn at(c: &Orchestrator, phase: &str) -> u64 {
        c.state()
            .timeline
            .iter()
            .find(|e| e.phase == phase)
            .unwrap_or_else(|| panic!("{phase} not in {:?}", c.state().timeline))
            .at_ms
    }

    #[test]
    fn a_commit_is_recorded_with_its_duration_and_downtime() {
        use crate::state::UpgradeOutcome;
        for (mut c, down_from) in [(core(), "old_stopped"), (mbb(), "switching")] {
            let o = drive(&mut c, 100, |_| None);
            assert!(matches!(o, Outcome::Committed { .. }), "{o:?}");
            let h = &c.state().history;
            assert_eq!(h.len(), 1, "{h:?}");
            let e = &h[0];
            assert_eq!(
                (e.from_version.as_str(), e.from_mr_enclave.as_str()),
                ("1.0.0", "aa")
            );
            assert_eq!(
                (e.to_version.as_str(), e.to_mr_enclave.as_str()),
                ("2.0.0", "bb")
            );
            assert_eq!(e.outcome, UpgradeOutcome::Committed);
            assert_eq!(e.reason, "");
            assert_eq!(e.source, "feed");
            assert_eq!(e.started_at_ms, 100);
            assert_eq!(e.ended_at_ms, at(&c, "idle"));
            assert_eq!(e.duration_ms, e.ended_at_ms - 100);
            let down = at(&c, "new_node_serving") - at(&c, down_from);
            assert!(down > 0);
            assert_eq!(e.downtime_ms, Some(down), "{:?}", c.state().timeline);
            // A second upgrade appends.
            let mut s = c.state().clone();
            s.current = release("1.0.0", "aa");
            s.highest_trusted = "1.0.0".into();
            let mut c2 = Orchestrator::new(s, c.policy);
            c2.handle(Event::Start, 0).unwrap();
            drive(&mut c2, 1000, |_| None);
            assert_eq!(c2.state().history.len(), 2);
            assert_eq!(c2.state().history[0], *e, "earlier entries stay");
        }
    }

    #[test]
    fn a_refusal_an_abandon_and_a_rollback_are_recorded_with_their_reasons() {
        use crate::state::UpgradeOutcome;
        // Refused at the download: the old node was never touched.
        let mut c = core();
        drive(&mut c, 0, |a| {
            matches!(a, Action::Download(_)).then(|| {
                Event::Downloaded(Err(StepError::Refused {
                    version: "2.0.0".into(),
                    reason: "SHA-256 mismatch".into(),
                }))
            })
        });
        let e = c.state().history.last().unwrap();
        assert_eq!(e.outcome, UpgradeOutcome::Refused);
        assert!(e.reason.contains("SHA-256 mismatch"), "{}", e.reason);
        // However long a driver's detail, an entry stays small.
        let mut c2 = core();
        drive(&mut c2, 0, |a| {
            matches!(a, Action::TakeKeys)
                .then(|| Event::KeysTaken(Err(StepError::TakeKeys("é".repeat(100_000)))))
        });
        let long = &c2.state().history[0].reason;
        assert_eq!(long.chars().count(), HISTORY_TEXT_LIMIT + 1, "cut, marked");
        assert!(long.ends_with('…'));
        assert_eq!(e.downtime_ms, Some(0));
        assert_eq!(e.to_mr_enclave, "bb");
        // A standby that fails before the switch: abandoned, no downtime.
        let mut c = mbb();
        drive(&mut c, 0, |a| {
            matches!(a, Action::LaunchStandby)
                .then(|| Event::Delivered(Err(StepError::Delivery("refused".into()))))
        });
        let e = c.state().history.last().unwrap();
        assert_eq!(e.outcome, UpgradeOutcome::Abandoned);
        assert!(e.reason.contains("refused"), "{}", e.reason);
        assert_eq!(e.downtime_ms, Some(0));
        // Unhealthy after the switch, in both modes: rolled back; the downtime runs from
        // the old node's stop to the end of the rollback.
        for (mut c, down_from) in [(core(), "old_stopped"), (mbb(), "switching")] {
            let o = drive(&mut c, 0, |a| {
                matches!(a, Action::CheckHealth)
                    .then(|| Event::Health(Err(StepError::Health("probe differs".into()))))
            });
            assert!(matches!(o, Outcome::RolledBack(_)), "{o:?}");
            assert_eq!(c.state().history.len(), 1);
            let e = &c.state().history[0];
            assert_eq!(e.outcome, UpgradeOutcome::RolledBack);
            assert!(e.reason.contains("probe differs"), "{}", e.reason);
            assert_eq!(e.from_version, "1.0.0");
            assert_eq!(c.state().current.version, "1.0.0");
            assert_eq!(e.downtime_ms, Some(e.ended_at_ms - at(&c, down_from)));
            assert!(e.downtime_ms > Some(0));
        }
        // A halted rollback is not an end: recorded once, when it finishes.
        let mut c = core();
        let mut stops = 0;
        let o = drive(&mut c, 0, |a| match a {
            Action::AwaitReady => Some(Event::Ready(Err(StepError::NotReady("x".into())))),
            // The first stop is the old node's; the rollback's stops are not confirmed.
            Action::StopNode => {
                stops += 1;
                (stops > 1).then_some(Event::Stopped { confirmed: false })
            }
            _ => None,
        });
        assert!(matches!(o, Outcome::RollbackHalted(_)), "{o:?}");
        assert!(c.state().history.is_empty());
        let mut a = c.handle(Event::Tick, 10_000).unwrap();
        while !matches!(a, Action::Finished(_)) {
            let ev = match a {
                Action::StartCurrent => Event::Started(Ok(())),
                Action::Persist => Event::Persisted(Ok(())),
                _ => Event::Stopped { confirmed: true },
            };
            a = c.handle(ev, 10_010).unwrap();
        }
        assert_eq!(c.state().history.len(), 1);
        assert_eq!(c.state().history[0].outcome, UpgradeOutcome::RolledBack);
        assert_eq!(c.state().history[0].ended_at_ms, 10_010);
    }

    #[test]
    fn an_upgrade_finished_after_a_restart_is_recorded_once() {
        use crate::state::UpgradeOutcome;
        // The journal a crash right after `Healthy` was written leaves.
        let mut s = State::new(release("1.0.0", "aa"));
        s.phase = Phase::Healthy;
        s.upgrade = Some(Upgrade {
            target_version: "2.0.0".into(),
            target_mr_enclave: "bb".into(),
            target: Some(release("2.0.0", "bb")),
            keyring_fingerprint: None,
            probe_sha256: None,
            started_at_ms: 5,
            source: "chain".into(),
            target_isv_svn: Some(2),
        });
        s.mark("candidate", 5, "");
        s.mark("old_stopped", 7, "");
        s.mark("new_node_serving", 20, "");
        s.mark("healthy", 21, "");
        let policy = core().policy;
        let mut c = Orchestrator::new(s, policy);
        assert_eq!(c.handle(Event::Start, 50).unwrap(), Action::Persist);
        assert!(matches!(
            c.handle(Event::Persisted(Ok(())), 50).unwrap(),
            Action::Finished(Outcome::Committed { .. })
        ));
        let h = &c.state().history;
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[0].outcome, UpgradeOutcome::Committed);
        assert_eq!((h[0].started_at_ms, h[0].ended_at_ms), (5, 50));
        assert_eq!(h[0].downtime_ms, Some(13));
        assert_eq!(h[0].source, "chain");
        // A restart when idle records nothing more.
        let mut again = Orchestrator::new(c.state().clone(), policy);
        assert_eq!(
            again.handle(Event::Start, 60).unwrap(),
            Action::Finished(Outcome::Nothing)
        );
        assert_eq!(again.state().history.len(), 1);
    }
}
