//! The holder: owns keys and gives them only to an attested, authorized, fresh receiver.

use std::collections::HashMap;

use dc_tee::{EnclaveIdentity, Measurement, Report, ReportData, TargetInfo, Tee};
use hpke::{
    aead::ChaCha20Poly1305, kdf::HkdfSha256, kem::X25519HkdfSha256, Deserializable, OpModeS,
    Serializable,
};
use rand_core::CryptoRng;
use subtle::ConstantTimeEq;

use crate::authz::{Authorizer, AuthzError, Destination, PeerRole, Version};
use crate::keyring::Keyring;
use crate::messages::{
    Ack, Challenge, Delivered, Hello, Keys, Response, SessionId, MAX_AUTHORIZATION,
};
use crate::{transcript, HandoverError};

type Kem = X25519HkdfSha256;

#[derive(Clone, Debug)]
pub struct HolderConfig {
    /// Accept DEBUG receivers. From the local measured policy only; off in production.
    pub allow_debug_peers: bool,
    /// Keys go to a node release only at this version or higher (the holder's own). The
    /// keyring's own floor ([`crate::keyring::Custody`]) applies on top.
    pub min_node_version: Version,
    /// Whether an upgrade agent may receive keys (a node holding its keys: yes, for a
    /// destination it authorizes itself; the agent handing keys to the new node: no).
    pub allow_upgrader: bool,
    /// How long a challenge, and then the wait for the acknowledgement, may last.
    pub challenge_ttl_ms: u64,
    /// Cap on sessions in flight.
    pub max_pending: usize,
    /// This holder's own authorization evidence, sent to the receiver.
    pub authorization: Vec<u8>,
}

enum Session {
    Challenged {
        t1: ReportData,
        expires_at_ms: u64,
        holder_report: Box<[u8; 432]>,
    },
    KeysSent {
        t3: ReportData,
        receiver: EnclaveIdentity,
        fingerprint: [u8; 32],
        released_to: Option<Box<Destination>>,
        expires_at_ms: u64,
    },
}

impl Session {
    fn expires_at_ms(&self) -> u64 {
        match self {
            Session::Challenged { expires_at_ms, .. } | Session::KeysSent { expires_at_ms, .. } => {
                *expires_at_ms
            }
        }
    }
}

/// The result of a completed handover: the receiver has the keys durably.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub receiver: EnclaveIdentity,
    pub keyring_fingerprint: [u8; 32],
    /// The node release the keys were released for (upgrader receivers).
    pub released_to: Option<Destination>,
    pub reply: Delivered,
}

/// The holder's side for any number of concurrent sessions.
pub struct Holder<A> {
    cfg: HolderConfig,
    authz: A,
    me: Measurement,
    sessions: HashMap<SessionId, Session>,
}

pub(crate) fn reports_match(a: &ReportData, b: &ReportData) -> bool {
    bool::from(a.0.ct_eq(&b.0))
}

/// Checks a peer report: MAC, transcript binding, DEBUG policy; returns the peer identity.
pub(crate) fn verify_peer(
    tee: &dyn Tee,
    report_bytes: &[u8; 432],
    expected: &ReportData,
    allow_debug: bool,
) -> Result<(Report, EnclaveIdentity), HandoverError> {
    let report = Report::from_bytes(report_bytes)?;
    let v = tee.verify_report(&report)?;
    if !reports_match(&v.report_data, expected) {
        return Err(HandoverError::TranscriptMismatch);
    }
    if v.identity.is_debug() && !allow_debug {
        return Err(HandoverError::DebugPeer(v.identity.mr_enclave));
    }
    Ok((report, v.identity))
}

impl<A: Authorizer> Holder<A> {
    pub fn new(tee: &dyn Tee, cfg: HolderConfig, authz: A) -> Result<Self, HandoverError> {
        Ok(Self {
            me: tee.target_info()?.mr_enclave,
            cfg,
            authz,
            sessions: HashMap::new(),
        })
    }

    pub fn pending(&self) -> usize {
        self.sessions.len()
    }

    fn evict_expired(&mut self, now_ms: u64) {
        self.sessions.retain(|_, s| s.expires_at_ms() >= now_ms);
    }

    /// Step 1: answers a hello with a fresh challenge.
    pub fn on_hello(
        &mut self,
        tee: &dyn Tee,
        hello: &Hello,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<Challenge, HandoverError> {
        let target = TargetInfo::from_bytes(&hello.target_info)?;
        self.evict_expired(now_ms);
        if self.sessions.len() >= self.cfg.max_pending {
            return Err(HandoverError::Busy);
        }
        let (mut session, mut nonce) = ([0u8; 16], [0u8; 32]);
        rng.fill_bytes(&mut session);
        rng.fill_bytes(&mut nonce);
        let expires_at_ms = now_ms.saturating_add(self.cfg.challenge_ttl_ms);
        let t1 = transcript::challenge(
            &session,
            &nonce,
            expires_at_ms,
            &target,
            &self.cfg.authorization,
        );
        let holder_report = tee.report(&target, &t1)?.to_bytes();
        self.sessions.insert(
            session,
            Session::Challenged {
                t1,
                expires_at_ms,
                holder_report: Box::new(holder_report),
            },
        );
        Ok(Challenge {
            session,
            nonce,
            expires_at_ms,
            holder_report,
            holder_authorization: self.cfg.authorization.clone(),
        })
    }

    /// Step 2: verifies the receiver and, only if every check passes, sends the keys.
    /// The session is consumed whatever the outcome: a nonce is good for one answer.
    pub fn on_response(
        &mut self,
        tee: &dyn Tee,
        resp: &Response,
        keyring: &Keyring,
        now_ms: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<Keys, HandoverError> {
        let Some(Session::Challenged { .. }) = self.sessions.get(&resp.session) else {
            return Err(HandoverError::UnknownSession);
        };
        let Some(Session::Challenged {
            t1,
            expires_at_ms,
            holder_report,
        }) = self.sessions.remove(&resp.session)
        else {
            unreachable!("checked above");
        };
        if now_ms > expires_at_ms {
            return Err(HandoverError::Expired);
        }
        if resp.receiver_authorization.len() > MAX_AUTHORIZATION {
            return Err(HandoverError::Malformed(
                "authorization evidence too large".into(),
            ));
        }
        // The receiver's MRENCLAVE enters T2, so read it (unverified) to compute the expected
        // value; verify_peer then checks the MAC over it.
        let claimed = Report::from_bytes(&resp.receiver_report)?;
        let t2 = transcript::response(
            &t1,
            &holder_report,
            &self.me,
            &claimed.mr_enclave,
            &resp.hpke_public_key,
            &resp.receiver_authorization,
            &resp.destination,
        );
        let (receiver_report, receiver) =
            verify_peer(tee, &resp.receiver_report, &t2, self.cfg.allow_debug_peers)?;
        let role = self
            .authz
            .authorize(&receiver, &resp.receiver_authorization)?;
        let released_to = self.check_destination(&receiver, role, &resp.destination, keyring)?;
        let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(&resp.hpke_public_key)
            .map_err(|_| HandoverError::Malformed("invalid X25519 public key".into()))?;
        // An upgrader gets the keys stamped with the release they are for; the agent delivers
        // them only there, and that node checks the stamp names it.
        let plaintext = match released_to {
            Some(d) => {
                let mut stamped = keyring.clone();
                stamped.custody_mut().released_to = Some(d);
                stamped.encode()
            }
            None => keyring.encode(),
        };
        let (enc, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem, _>(
            &OpModeS::Base,
            &pk,
            &transcript::hpke_info(&t2),
            &plaintext,
            &t2.0,
            rng,
        )
        .map_err(|e| HandoverError::Malformed(format!("HPKE seal failed: {e}")))?;
        let encapsulated_key: [u8; 32] = enc.to_bytes().into();
        let t3 = transcript::keys(&t2, &encapsulated_key, &ciphertext);
        let report = tee.report(&receiver_report.to_target_info(), &t3)?;
        self.sessions.insert(
            resp.session,
            Session::KeysSent {
                t3,
                receiver,
                fingerprint: keyring.fingerprint(),
                released_to: released_to.map(Box::new),
                expires_at_ms: now_ms.saturating_add(self.cfg.challenge_ttl_ms),
            },
        );
        Ok(Keys {
            session: resp.session,
            encapsulated_key,
            ciphertext,
            holder_report: report.to_bytes(),
        })
    }

    /// Step 3: the receiver attests that it stored the keys durably.
    pub fn on_ack(
        &mut self,
        tee: &dyn Tee,
        ack: &Ack,
        now_ms: u64,
    ) -> Result<Delivery, HandoverError> {
        let Some(Session::KeysSent {
            t3,
            receiver,
            fingerprint,
            released_to,
            expires_at_ms,
        }) = self.sessions.get(&ack.session)
        else {
            return Err(HandoverError::UnknownSession);
        };
        let (t3, receiver, fingerprint, released_to, expires_at_ms) = (
            *t3,
            *receiver,
            *fingerprint,
            released_to.as_deref().copied(),
            *expires_at_ms,
        );
        if now_ms > expires_at_ms {
            self.sessions.remove(&ack.session);
            return Err(HandoverError::Expired);
        }
        if !bool::from(ack.keyring_fingerprint.ct_eq(&fingerprint)) {
            return Err(HandoverError::AckMismatch);
        }
        let (_, peer) = verify_peer(
            tee,
            &ack.receiver_report,
            &transcript::ack(&t3, &fingerprint),
            self.cfg.allow_debug_peers,
        )?;
        if peer != receiver {
            return Err(HandoverError::PeerChanged);
        }
        self.sessions.remove(&ack.session);
        Ok(Delivery {
            receiver,
            keyring_fingerprint: fingerprint,
            released_to,
            reply: Delivered {
                session: ack.session,
                keyring_fingerprint: fingerprint,
            },
        })
    }

    /// The release rules, all decided here, inside the enclave that holds the keys:
    /// - a node receiver must be at or above the holder's version and the keyring's floor,
    ///   not revoked, and exactly the release the keys were released for;
    /// - an upgrader must name a committee-signed destination release that passes the same
    ///   rules; the keys are then stamped for it.
    fn check_destination(
        &self,
        receiver: &EnclaveIdentity,
        role: PeerRole,
        destination: &[u8],
        keyring: &Keyring,
    ) -> Result<Option<Destination>, HandoverError> {
        let custody = keyring.custody();
        let admissible = |d: &Destination| -> Result<(), HandoverError> {
            if custody.is_revoked(&d.mr_enclave) {
                return Err(AuthzError::Revoked(d.mr_enclave).into());
            }
            if d.version < self.cfg.min_node_version {
                return Err(HandoverError::LowerVersion {
                    peer: d.mr_enclave,
                    peer_version: d.version,
                    minimum: self.cfg.min_node_version,
                });
            }
            if d.version < custody.floor || d.isv_svn < custody.floor_isv_svn {
                return Err(HandoverError::BelowFloor {
                    peer: d.mr_enclave,
                    version: d.version,
                    floor: custody.floor,
                    floor_isv_svn: custody.floor_isv_svn,
                });
            }
            Ok(())
        };
        match role {
            PeerRole::Node(v) => {
                if !destination.is_empty() {
                    return Err(HandoverError::UnexpectedDestination);
                }
                admissible(&Destination {
                    mr_enclave: receiver.mr_enclave,
                    version: v,
                    isv_svn: receiver.isv_svn,
                })?;
                // Nodes never hand keys to nodes directly: a node receives only keys that a
                // node holder released for exactly it.
                match custody.released_to {
                    Some(d) if d.mr_enclave == receiver.mr_enclave => Ok(None),
                    other => Err(HandoverError::NotReleasedForPeer {
                        peer: receiver.mr_enclave,
                        released_to: other.map_or("no release".into(), |d| d.to_string()),
                    }),
                }
            }
            PeerRole::Upgrader => {
                if !self.cfg.allow_upgrader {
                    return Err(HandoverError::WrongRole(receiver.mr_enclave));
                }
                // A revoked upgrade agent gets nothing, whatever it asks for.
                if custody.is_revoked(&receiver.mr_enclave) {
                    return Err(AuthzError::Revoked(receiver.mr_enclave).into());
                }
                if destination.is_empty() {
                    return Err(HandoverError::NoDestination);
                }
                if destination.len() > MAX_AUTHORIZATION {
                    return Err(HandoverError::Malformed(
                        "destination evidence too large".into(),
                    ));
                }
                let d = self.authz.authorize_destination(destination)?;
                admissible(&d)?;
                Ok(Some(d))
            }
        }
    }
}
