//! `dc-orchestrator`: the upgrade agent's decisions, as a pure state machine.
//!
//! - [`state`]: the persisted state — exactly what the agent's journal holds.

pub mod state;
