//! Where a starting node's keys come from. A pure decision so every case is tested.

/// What the node finds when it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Situation {
    /// A sealed keyring for this very enclave identity exists.
    pub own_sealed: bool,
    /// Sealed keyrings of other versions, or stored objects, exist.
    pub other_state: bool,
    /// An upgrade agent to receive keys from is configured.
    pub upgrader: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// Unseal our own blob.
    Unseal,
    /// Receive the keyring from the upgrade agent by attested handover.
    Handover,
    /// A truly empty node: make a fresh keyring.
    Generate,
    /// Refuse to start: there is data (or other versions' keys) but no way to get its keys.
    /// Generating new keys here would silently make every stored object unreadable.
    Refuse,
}

/// An explicitly configured upgrader wins over an own sealed blob: the agent starts a node
/// with `--upgrader` only to hand it the current keyring, and a blob this version sealed
/// during an earlier, rolled-back attempt must not stop a retry from receiving it.
pub fn decide(s: Situation) -> KeySource {
    match s {
        Situation { upgrader: true, .. } => KeySource::Handover,
        Situation {
            own_sealed: true, ..
        } => KeySource::Unseal,
        Situation {
            other_state: false, ..
        } => KeySource::Generate,
        _ => KeySource::Refuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_situation() {
        for own_sealed in [false, true] {
            for other_state in [false, true] {
                for upgrader in [false, true] {
                    let s = Situation {
                        own_sealed,
                        other_state,
                        upgrader,
                    };
                    let want = if upgrader {
                        KeySource::Handover
                    } else if own_sealed {
                        KeySource::Unseal
                    } else if !other_state {
                        KeySource::Generate
                    } else {
                        KeySource::Refuse
                    };
                    assert_eq!(decide(s), want, "{s:?}");
                }
            }
        }
        // The case that loses data in a careless implementation.
        assert_eq!(
            decide(Situation {
                own_sealed: false,
                other_state: true,
                upgrader: false
            }),
            KeySource::Refuse
        );
        // A retry after a rolled-back attempt that had already sealed: receive again.
        assert_eq!(
            decide(Situation {
                own_sealed: true,
                other_state: true,
                upgrader: true
            }),
            KeySource::Handover
        );
    }
}
