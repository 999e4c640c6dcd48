//! `dc-orchestrator`: the upgrade agent's decisions, as a pure state machine.
//!
//! - [`state`]: the persisted state — exactly what the agent's journal holds.
//! - [`core`]: the orchestrator — events in, one action out, no I/O, no clock. The agent's
//!   async driver (`dcupgrade::agent`) only carries out the actions.
//!
//! `tests/model.rs` explores the core together with models of the old node, the new node and
//! the host with the `stateright` model checker.

pub mod core;
pub mod state;

pub use crate::core::{
    Action, Event, Offer, Orchestrator, Outcome, Policy, Refusal, Selection, StepError, SwitchMode,
    Taken, UnexpectedEvent, Verified,
};
