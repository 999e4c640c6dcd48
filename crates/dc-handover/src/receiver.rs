//! The receiver: takes keys only from an attested, authorized holder, over a fresh session,
//! and acknowledges only after it has stored them durably.

use dc_tee::{EnclaveIdentity, ReportData, TargetInfo, Tee};
use hpke::{
    aead::ChaCha20Poly1305, kdf::HkdfSha256, kem::X25519HkdfSha256, Deserializable, Kem as _,
    OpModeR, Serializable,
};
use rand_core::CryptoRng;

use crate::authz::{Authorizer, Destination, PeerRole};
use crate::holder::verify_peer;
use crate::keyring::Keyring;
use crate::messages::{
    Ack, Challenge, Hello, Keys, Response, SessionId, MAX_AUTHORIZATION, MAX_CIPHERTEXT,
};
use crate::{transcript, HandoverError};

type Kem = X25519HkdfSha256;

#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// Accept a DEBUG holder. From the local measured policy only; off in production.
    pub allow_debug_peers: bool,
    /// This receiver's authorization evidence, sent to the holder (bound into T2).
    pub authorization: Vec<u8>,
    /// Upgraders only: evidence of the node release the keys are collected for (bound into
    /// T2); empty for a node.
    pub destination: Vec<u8>,
    /// The release the keys must have been released for: a node names itself, the upgrade
    /// agent the destination it asked for. A keyring stamped otherwise is refused before the
    /// caller sees it.
    pub expect_released_to: Option<Destination>,
}

enum State {
    AwaitChallenge {
        sk: <Kem as hpke::Kem>::PrivateKey,
        pk: [u8; 32],
        me: TargetInfo,
    },
    AwaitKeys {
        sk: <Kem as hpke::Kem>::PrivateKey,
        t2: ReportData,
        holder: EnclaveIdentity,
        session: SessionId,
    },
    AwaitDurable {
        t3: ReportData,
        holder: EnclaveIdentity,
        fingerprint: [u8; 32],
        session: SessionId,
    },
    Done,
    Failed,
}

/// Keys received and verified, not yet acknowledged.
#[derive(Debug)]
pub struct Received {
    pub keyring: Keyring,
    pub holder: EnclaveIdentity,
    pub holder_role: PeerRole,
}

/// One handover, receiver side. Any error ends it (`Failed`); start a new one.
pub struct Receiver<A> {
    cfg: ReceiverConfig,
    authz: A,
    state: State,
    holder_role: Option<PeerRole>,
}

impl<A: Authorizer> Receiver<A> {
    /// Makes an ephemeral HPKE key pair and the hello.
    pub fn start(
        tee: &dyn Tee,
        cfg: ReceiverConfig,
        authz: A,
        rng: &mut impl CryptoRng,
    ) -> Result<(Self, Hello), HandoverError> {
        let me = tee.target_info()?;
        let (sk, pk) = Kem::gen_keypair(rng);
        let pk: [u8; 32] = pk.to_bytes().into();
        let hello = Hello {
            target_info: me.to_bytes(),
        };
        Ok((
            Self {
                cfg,
                authz,
                state: State::AwaitChallenge { sk, pk, me },
                holder_role: None,
            },
            hello,
        ))
    }

    /// The holder, once its challenge has been verified.
    pub fn holder(&self) -> Option<&EnclaveIdentity> {
        match &self.state {
            State::AwaitKeys { holder, .. } | State::AwaitDurable { holder, .. } => Some(holder),
            _ => None,
        }
    }

    /// Step 1: verifies the holder's challenge and answers it.
    pub fn on_challenge(
        &mut self,
        tee: &dyn Tee,
        ch: &Challenge,
        now_ms: u64,
    ) -> Result<Response, HandoverError> {
        let State::AwaitChallenge { sk, pk, me } =
            std::mem::replace(&mut self.state, State::Failed)
        else {
            return Err(HandoverError::WrongState("challenge not expected"));
        };
        if ch.expires_at_ms < now_ms {
            return Err(HandoverError::Expired);
        }
        if ch.holder_authorization.len() > MAX_AUTHORIZATION {
            return Err(HandoverError::Malformed(
                "authorization evidence too large".into(),
            ));
        }
        let t1 = transcript::challenge(
            &ch.session,
            &ch.nonce,
            ch.expires_at_ms,
            &me,
            &ch.holder_authorization,
        );
        let (holder_report, holder) =
            verify_peer(tee, &ch.holder_report, &t1, self.cfg.allow_debug_peers)?;
        self.holder_role = Some(self.authz.authorize(&holder, &ch.holder_authorization)?);
        let t2 = transcript::response(
            &t1,
            &ch.holder_report,
            &holder.mr_enclave,
            &me.mr_enclave,
            &pk,
            &self.cfg.authorization,
            &self.cfg.destination,
        );
        let report = tee.report(&holder_report.to_target_info(), &t2)?;
        self.state = State::AwaitKeys {
            sk,
            t2,
            holder,
            session: ch.session,
        };
        Ok(Response {
            session: ch.session,
            receiver_report: report.to_bytes(),
            hpke_public_key: pk,
            receiver_authorization: self.cfg.authorization.clone(),
            destination: self.cfg.destination.clone(),
        })
    }

    /// Step 2: verifies the holder's keys message and opens the keyring. The caller must seal
    /// it durably before calling [`Receiver::ack`].
    pub fn on_keys(&mut self, tee: &dyn Tee, keys: &Keys) -> Result<Received, HandoverError> {
        let State::AwaitKeys {
            sk,
            t2,
            holder,
            session,
        } = std::mem::replace(&mut self.state, State::Failed)
        else {
            return Err(HandoverError::WrongState("keys not expected"));
        };
        if keys.session != session {
            return Err(HandoverError::UnknownSession);
        }
        if keys.ciphertext.len() > MAX_CIPHERTEXT {
            return Err(HandoverError::Malformed("ciphertext too large".into()));
        }
        let t3 = transcript::keys(&t2, &keys.encapsulated_key, &keys.ciphertext);
        let (_, sender) = verify_peer(tee, &keys.holder_report, &t3, self.cfg.allow_debug_peers)?;
        if sender != holder {
            return Err(HandoverError::PeerChanged);
        }
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&keys.encapsulated_key)
            .map_err(|_| HandoverError::Malformed("invalid encapsulated key".into()))?;
        let plaintext = zeroize::Zeroizing::new(
            hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
                &OpModeR::Base,
                &sk,
                &enc,
                &transcript::hpke_info(&t2),
                &keys.ciphertext,
                &t2.0,
            )
            .map_err(|_| HandoverError::DecryptFailed)?,
        );
        let keyring =
            Keyring::decode(&plaintext).map_err(|e| HandoverError::Malformed(e.to_string()))?;
        if let Some(want) = &self.cfg.expect_released_to {
            if keyring.custody().released_to.as_ref() != Some(want) {
                return Err(HandoverError::NotReleasedForMe {
                    me: want.to_string(),
                    released_to: keyring
                        .custody()
                        .released_to
                        .map_or("no release".into(), |d| d.to_string()),
                });
            }
        }
        self.state = State::AwaitDurable {
            t3,
            holder,
            fingerprint: keyring.fingerprint(),
            session,
        };
        Ok(Received {
            keyring,
            holder,
            holder_role: self.holder_role.expect("set with the challenge"),
        })
    }

    /// Step 3: the acknowledgement. Call only once the keys are stored durably: the holder
    /// treats it as permission to forget them.
    pub fn ack(&mut self, tee: &dyn Tee) -> Result<Ack, HandoverError> {
        let State::AwaitDurable {
            t3,
            holder,
            fingerprint,
            session,
        } = std::mem::replace(&mut self.state, State::Failed)
        else {
            return Err(HandoverError::WrongState("nothing to acknowledge"));
        };
        let report = tee.report(&holder.target_info(), &transcript::ack(&t3, &fingerprint))?;
        self.state = State::Done;
        Ok(Ack {
            session,
            receiver_report: report.to_bytes(),
            keyring_fingerprint: fingerprint,
        })
    }
}
