//! Access tokens: HS256 JWTs with subject, issuer, expiry and a token id (`jti`) that logout
//! revokes. Only HS256 is accepted, so a token signed with another algorithm (or none) is
//! refused; a revoked token is refused like an invalid one.

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
}

/// A verified token: who, which token, and until when.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    pub user: UserId,
    pub jti: Uuid,
    /// Seconds since the Unix epoch.
    pub expires: u64,
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

    pub fn issue(&self, user: UserId) -> AppResult<String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user.0.to_string(),
            iss: ISSUER.to_owned(),
            iat: now,
            exp: now + self.ttl.as_secs(),
            jti: Some(Uuid::new_v4()),
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
        if self.revoked.contains(&jti) {
            return Err(AppError::Unauthorized("token revoked"));
        }
        let user = data
            .claims
            .sub
            .parse()
            .map(UserId)
            .map_err(|_| AppError::Unauthorized("invalid token"))?;
        Ok(Session {
            user,
            jti,
            expires: data.claims.exp,
        })
    }
}
