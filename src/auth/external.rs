//! The app's own tokens: signed by the app's backend with a shared HS256 secret, or with a key
//! of its JSON Web Key Set (RS256, ES256). A token's `sub` is the app's user id; the XFChat
//! user it maps to is created on first use. The key set is cached, fetched again every
//! refresh period, and early (at most once per period) when a token names a key it lacks.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;
use uuid::Uuid;

use crate::config::ExternalJwtConfig;
use crate::error::{AppError, AppResult};

/// Longest `sub` accepted.
const SUBJECT_MAX: usize = 255;
/// Longest display name taken from a token.
const NAME_MAX: usize = 64;
/// Clock skew allowed between the app's backend and this server.
const LEEWAY_SECS: u64 = 30;

/// What a verified token of the app's says.
#[derive(Debug, Clone)]
pub struct Claims {
    pub subject: String,
    pub name: Option<String>,
    pub jti: Uuid,
    pub issued: u64,
    pub expires: u64,
}

#[derive(Default)]
struct KeySet {
    keys: Vec<(Option<String>, Algorithm, DecodingKey)>,
    fetched: Option<Instant>,
}

pub struct ExternalTokens {
    config: ExternalJwtConfig,
    secret: Option<DecodingKey>,
    client: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    fetching: tokio::sync::Mutex<()>,
}

fn refused() -> AppError {
    AppError::Unauthorized("invalid token")
}

impl ExternalTokens {
    pub fn new(config: ExternalJwtConfig) -> AppResult<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| AppError::Internal(e.into()))?;
        Ok(Self {
            secret: config
                .secret
                .as_ref()
                .map(|s| DecodingKey::from_secret(s.expose().as_bytes())),
            config,
            client,
            keys: RwLock::default(),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// Checks `token`'s signature, expiry and (when configured) issuer and audience.
    pub async fn verify(&self, token: &str) -> AppResult<Claims> {
        let header = decode_header(token).map_err(|_| refused())?;
        let key = match header.alg {
            Algorithm::HS256 => self.secret.clone().ok_or_else(refused)?,
            Algorithm::RS256 | Algorithm::ES256 if self.config.jwks_url.is_some() => {
                self.key(header.kid.as_deref(), header.alg).await?
            }
            _ => return Err(refused()),
        };
        let mut validation = Validation::new(header.alg);
        let mut required = vec!["exp", "sub", "iat"];
        required.extend(self.config.issuer.as_ref().map(|_| "iss"));
        required.extend(self.config.audience.as_ref().map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        validation.leeway = LEEWAY_SECS;
        match &self.config.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &self.config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        let data = decode::<serde_json::Map<String, Value>>(token, &key, &validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    AppError::Unauthorized("token expired")
                }
                _ => refused(),
            },
        )?;
        let claims = data.claims;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= SUBJECT_MAX)
            .ok_or_else(refused)?
            .to_owned();
        let number = |name: &str| claims.get(name).and_then(Value::as_u64).ok_or_else(refused);
        let name = claims
            .get(&self.config.name_claim)
            .and_then(Value::as_str)
            .map(|n| n.trim())
            .filter(|n| !n.is_empty() && !n.chars().any(char::is_control))
            .map(|n| n.chars().take(NAME_MAX).collect());
        let jti = claims
            .get("jti")
            .and_then(Value::as_str)
            .and_then(|j| Uuid::parse_str(j).ok())
            .unwrap_or_else(|| Uuid::new_v5(&Uuid::NAMESPACE_OID, token.as_bytes()));
        let issued = number("iat")?;
        // Issued in the future: a clock far ahead, or a token made to outlive a revocation.
        if issued > jsonwebtoken::get_current_timestamp() + LEEWAY_SECS {
            return Err(refused());
        }
        Ok(Claims {
            subject,
            name,
            jti,
            issued,
            expires: number("exp")?,
        })
    }

    /// The key set's key `kid` for `alg`, fetching the set when it is stale or lacks the key.
    async fn key(&self, kid: Option<&str>, alg: Algorithm) -> AppResult<DecodingKey> {
        let refresh = self.config.jwks_refresh;
        let find = |set: &KeySet| {
            set.keys
                .iter()
                .find(|(k, a, _)| *a == alg && (kid.is_none() || k.as_deref() == kid))
                .map(|(_, _, key)| key.clone())
        };
        let set = self.keys.read().expect("key set lock").clone();
        let stale = set.fetched.is_none_or(|at| at.elapsed() >= refresh);
        if let (Some(key), false) = (find(&set), stale) {
            return Ok(key);
        }
        // One fetch at a time; the others wait for it and use what it brought.
        let _fetching = self.fetching.lock().await;
        let set = self.keys.read().expect("key set lock").clone();
        let may_fetch = match set.fetched {
            None => true,
            // A key set fetched less than a period ago is fetched again only when stale;
            // an unknown `kid` waits for the next period, so tokens cannot make it hammer.
            Some(at) => at.elapsed() >= refresh.min(Duration::from_secs(30)) || stale,
        };
        if may_fetch {
            match self.fetch().await {
                Ok(fresh) => {
                    let fresh = Arc::new(fresh);
                    *self.keys.write().expect("key set lock") = fresh.clone();
                    return find(&fresh).ok_or_else(refused);
                }
                Err(e) => tracing::warn!(error = %e, "the app's key set could not be fetched"),
            }
        }
        find(&set).ok_or_else(refused)
    }

    async fn fetch(&self) -> anyhow::Result<KeySet> {
        let url = self.config.jwks_url.clone().expect("checked by the caller");
        let set: JwkSet = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.without_url()))?
            .error_for_status()
            .map_err(|e| anyhow::anyhow!("{}", e.without_url()))?
            .json()
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.without_url()))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let alg = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                _ => continue,
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.push((jwk.common.key_id.clone(), alg, key));
            }
        }
        tracing::info!(keys = keys.len(), "fetched the app's key set");
        Ok(KeySet {
            keys,
            fetched: Some(Instant::now()),
        })
    }
}
