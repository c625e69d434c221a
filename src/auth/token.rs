//! Access tokens: short-lived HS256 JWTs with subject, issuer, expiry, a token id (`jti`) and
//! the session they belong to (`sid`); ending the session (logout, logout everywhere, a password
//! change, deletion) revokes them. Only HS256 is accepted, so a token signed with another
//! algorithm (or none) is refused; a revoked token is refused like an invalid one.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::revoked::Revoked;
use crate::error::{AppError, AppResult};
use crate::ids::UserId;

const ISSUER: &str = "xfchat";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    iat: u64,
    exp: u64,
    /// Absent from tokens issued before logout existed; those are known by a hash of the token.
    #[serde(default)]
    jti: Option<Uuid>,
    /// Absent from tokens issued before sessions existed; those share one session per user.
    #[serde(default)]
    sid: Option<Uuid>,
}

/// The session of tokens issued before sessions existed: one per user, ended with the others.
pub fn legacy_session(user: UserId) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("xfchat-session:{user}").as_bytes(),
    )
}

/// The one session of the app's own tokens of `user` (they have none of their own): ending it
/// closes their sockets; their revocation is by issue time.
pub fn external_session(user: UserId) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("xfchat-external:{user}").as_bytes(),
    )
}

/// A verified token: who, which token, and until when.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    pub user: UserId,
    pub jti: Uuid,
    /// The login this token belongs to.
    pub sid: Uuid,
    /// Seconds since the Unix epoch.
    pub expires: u64,
    /// When the token was issued (a ticket: when it was redeemed), seconds since the epoch.
    pub issued: u64,
}

impl Session {
    pub fn expires_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.expires as i64, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Time left until the token expires.
    pub fn remaining(&self) -> Duration {
        let now = jsonwebtoken::get_current_timestamp();
        Duration::from_secs(self.expires.saturating_sub(now))
    }
}

/// Issues and checks access tokens with the server's secret.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    revoked: Arc<Revoked>,
}

impl Tokens {
    pub fn new(secret: &str, ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            ttl,
            revoked: Arc::default(),
        }
    }

    /// The revocation list this instance checks.
    pub fn revoked(&self) -> &Arc<Revoked> {
        &self.revoked
    }

    /// How long an access token lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new access token of session `sid`.
    pub fn issue(&self, user: UserId, sid: Uuid) -> AppResult<String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user.0.to_string(),
            iss: ISSUER.to_owned(),
            iat: now,
            exp: now + self.ttl.as_secs(),
            jti: Some(Uuid::new_v4()),
            sid: Some(sid),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AppError::Internal(e.into()))
    }

    pub fn verify(&self, token: &str) -> AppResult<Session> {
        let data =
            decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                        AppError::Unauthorized("token expired")
                    }
                    _ => AppError::Unauthorized("invalid token"),
                }
            })?;
        let jti = data
            .claims
            .jti
            .unwrap_or_else(|| Uuid::new_v5(&Uuid::NAMESPACE_OID, token.as_bytes()));
        let user = data
            .claims
            .sub
            .parse()
            .map(UserId)
            .map_err(|_| AppError::Unauthorized("invalid token"))?;
        let session = Session {
            user,
            jti,
            sid: data.claims.sid.unwrap_or_else(|| legacy_session(user)),
            expires: data.claims.exp,
            issued: data.claims.iat,
        };
        if self.is_revoked(&session) {
            return Err(AppError::Unauthorized("token revoked"));
        }
        Ok(session)
    }

    /// Whether the token or the session of `session` was revoked.
    pub fn is_revoked(&self, session: &Session) -> bool {
        self.revoked.contains(&session.jti)
            || self.revoked.contains(&session.sid)
            || self.revoked.cut_off(session)
    }
}
