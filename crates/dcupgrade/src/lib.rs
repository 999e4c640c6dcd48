//! `dcupgrade`: the upgrade agent.
//!
//! - [`agent`]: the journaled orchestrator (DESIGN §7).
//! - [`journal`]: its durable state.
//! - [`download`]: artifact downloads with digest and size checks.
//! - [`launcher`]: starting and stopping node enclaves (software platform, Gramine, or through
//!   the launch broker).
//! - [`broker`]: the host-side launch broker for an agent inside Gramine.
//! - [`control_frames`]: the launch protocol's frames over TCP, spoken by both of them.
//! - [`api`]: the HTTP API on 127.0.0.1:6666.

pub mod agent;
pub mod api;
pub mod broker;
pub mod control_frames;
pub mod crash;
pub mod download;
pub mod journal;
pub mod launcher;
pub mod metrics;
pub mod preflight;
pub mod source;
