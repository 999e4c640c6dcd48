//! `dc-tee-sim`: the software TEE platform — the "CPU" for machines without SGX.
//!
//! **Insecure by design.** It mirrors SGX closely enough that protocol bugs show up (identity
//! assigned by the platform from the measured bundle, report MACs under the target's key,
//! SGX key-derivation rules), but its root secret is a file that root on the host can read.
//! Use it for development, CI and demos, never to protect real data.
//!
//! - [`platform`]: EREPORT/EGETKEY as pure functions.
//! - [`state`]: the root secret and CPUSVN on disk.
//! - [`server`]: `dctee-sim serve` — launches enclaves and serves their channels.
//! - [`fds`]: listening sockets passed over the control socket (`SCM_RIGHTS`).
//! - [`launch`]: the client of `dctee-sim launch` (the control protocol's messages are
//!   [`dc_tee::sim::control`], shared with the agent's launch broker).

pub mod fds;
pub mod launch;
pub mod platform;
pub mod server;
pub mod state;
