use dc_tee::Measurement;

use crate::authz::{AuthzError, Version};

/// Why a handover step was refused. Every variant leaves the keys where they were.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("peer report is malformed: {0}")]
    MalformedReport(#[from] dc_tee::sgx::LayoutError),
    #[error(
        "peer report does not verify: not made for this enclave, from another platform, or altered"
    )]
    ReportMac,
    #[error("the TEE failed: {0}")]
    Tee(dc_tee::TeeError),
    #[error("report_data does not match the transcript: the message was altered, replayed from another session, or a field (e.g. the ephemeral key) was substituted")]
    TranscriptMismatch,
    #[error(transparent)]
    Unauthorized(#[from] AuthzError),
    #[error(
        "peer {0} is a DEBUG enclave (its memory is readable by the host); refused by local policy"
    )]
    DebugPeer(Measurement),
    #[error("peer {peer} is version {peer_version}, lower than {minimum}: keys never go to a lower version")]
    LowerVersion {
        peer: Measurement,
        peer_version: Version,
        minimum: Version,
    },
    #[error("peer {peer} asks for keys for release version {version}, below the keyring's floor {floor} (ISVSVN {floor_isv_svn}): a newer release already held these keys")]
    BelowFloor {
        peer: Measurement,
        version: Version,
        floor: Version,
        floor_isv_svn: u16,
    },
    #[error("an upgrader must name the committee-signed node release it collects the keys for (empty destination)")]
    NoDestination,
    #[error("a destination may be named only by an upgrader")]
    UnexpectedDestination,
    #[error("these keys were released for {released_to}, not for {peer}")]
    NotReleasedForPeer {
        peer: Measurement,
        released_to: String,
    },
    #[error("the received keys were released for {released_to}, not for this enclave ({me}); refused before storing anything")]
    NotReleasedForMe { me: String, released_to: String },
    #[error("peer {0} may not receive keys in this role")]
    WrongRole(Measurement),
    #[error("unknown or already used session: a replayed, expired or foreign nonce")]
    UnknownSession,
    #[error("the challenge expired before the answer arrived; start a new handover")]
    Expired,
    #[error("too many pending handovers; retry shortly")]
    Busy,
    #[error("the peer that sent the keys is not the one that issued the challenge")]
    PeerChanged,
    #[error("the encrypted keyring does not open: tampered ciphertext or wrong key")]
    DecryptFailed,
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("message arrived in the wrong protocol state: {0}")]
    WrongState(&'static str),
    #[error("the acknowledgement does not name the keyring that was sent")]
    AckMismatch,
}

impl From<dc_tee::TeeError> for HandoverError {
    fn from(e: dc_tee::TeeError) -> Self {
        match e {
            dc_tee::TeeError::ReportMac => HandoverError::ReportMac,
            dc_tee::TeeError::Layout(l) => HandoverError::MalformedReport(l),
            e => HandoverError::Tee(e),
        }
    }
}

impl HandoverError {
    /// A stable machine-readable code for the wire and for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedReport(_) => "malformed_report",
            Self::ReportMac => "report_mac",
            Self::Tee(_) => "tee_failure",
            Self::TranscriptMismatch => "transcript_mismatch",
            Self::Unauthorized(AuthzError::Revoked(_)) => "revoked",
            Self::Unauthorized(_) => "unauthorized",
            Self::DebugPeer(_) => "debug_peer",
            Self::LowerVersion { .. } => "lower_version",
            Self::WrongRole(_) => "wrong_role",
            Self::BelowFloor { .. } => "below_floor",
            Self::NoDestination => "no_destination",
            Self::UnexpectedDestination => "unexpected_destination",
            Self::NotReleasedForPeer { .. } => "not_released_for_peer",
            Self::NotReleasedForMe { .. } => "not_released_for_me",
            Self::UnknownSession => "unknown_session",
            Self::Expired => "expired",
            Self::Busy => "busy",
            Self::PeerChanged => "peer_changed",
            Self::DecryptFailed => "decrypt_failed",
            Self::Malformed(_) => "malformed",
            Self::WrongState(_) => "wrong_state",
            Self::AckMismatch => "ack_mismatch",
        }
    }
}
