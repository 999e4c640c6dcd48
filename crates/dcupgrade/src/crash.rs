//! Crash injection for the crash-at-every-step tests (DESIGN §7: a crash at any point must
//! resume to a safe state).
//!
//! Compiled only into debug builds (`debug_assertions`): a release build has no way to turn it
//! on. `dcupgrade run --crash-at NAME` makes the agent exit abruptly — `_exit`, no destructors,
//! no flushing, as `kill -9` would — when it reaches the named point. The points are the
//! moments right before and right after each journal transition (`before:PHASE`,
//! `after:PHASE`), after each side effect, and while the agent serves the new node its
//! challenge and its keys (see [`POINTS`]).

/// Every injection point of a make-before-break upgrade (the default), in the order it
/// reaches them.
pub const POINTS: &[&str] = &[
    "before:candidate",
    "after:candidate",
    "after-effect:download",
    "before:downloaded",
    "after:downloaded",
    "after-effect:probe",
    "after-effect:keys-sealed",
    "after-effect:keys-acknowledged",
    "before:keys_acquired",
    "after:keys_acquired",
    "before:standby_launched",
    "after:standby_launched",
    "after-effect:standby-launched",
    "handover:challenge-made",
    "handover:keys-made",
    "after-effect:keys-delivered",
    "before:standby_ready",
    "after:standby_ready",
    "before:switching",
    "after:switching",
    "after-effect:old-node-stopped",
    "after-effect:new-node-ready",
    "after-effect:health-checked",
    "before:healthy",
    "after:healthy",
    "before:idle",
    "after:idle",
];

/// The points only a break-before-make upgrade reaches (`--switch break-before-make`).
pub const BREAK_BEFORE_MAKE_POINTS: &[&str] = &[
    "before:old_stopped",
    "after:old_stopped",
    "before:new_launched",
    "after:new_launched",
    "after-effect:new-node-launched",
    "before:keys_delivered",
    "after:keys_delivered",
];

/// Points reached only when an upgrade fails and is rolled back.
pub const ROLLBACK_POINTS: &[&str] = &["before:rolling_back", "after:rolling_back"];

#[cfg(debug_assertions)]
static ARMED: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Arms one point (debug builds only; a no-op in release builds).
pub fn arm(point: Option<String>) {
    #[cfg(debug_assertions)]
    if let Some(p) = point {
        tracing::warn!(point = %p, "crash injection armed (test build)");
        let _ = ARMED.set(p);
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}

/// Exits abruptly if `name` is the armed point.
pub fn point(name: &str) {
    #[cfg(debug_assertions)]
    if ARMED.get().is_some_and(|p| p == name) {
        eprintln!("dcupgrade: crash injection at {name}");
        // SAFETY: _exit(2) ends the process at once; that is the point.
        unsafe { libc::_exit(86) };
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
