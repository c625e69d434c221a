//! Settings for the backends that build on XFChat: webhooks, the app's own tokens and the
//! service key. All optional; each is off until its setting is given.

use std::time::Duration;

use clap::Args;

use super::{invalid, ConfigError, Secret};

/// The events a webhook can carry.
pub const WEBHOOK_EVENTS: [&str; 2] = ["message.offline", "message.created"];

#[derive(Clone, Args)]
pub struct IntegrationSettings {
    /// Where webhook events are POSTed (http:// or https://); webhooks are off without it.
    #[arg(long, env = "XFCHAT_WEBHOOK_URL", global = true)]
    pub webhook_url: Option<String>,
    /// Secret that signs each webhook request (HMAC-SHA256), at least 32 bytes; required with
    /// XFCHAT_WEBHOOK_URL.
    #[arg(
        long,
        env = "XFCHAT_WEBHOOK_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub webhook_secret: Option<String>,
    /// The events sent, comma-separated: `message.offline` (a message for a member with no
    /// open socket), `message.created` (every message, once).
    #[arg(
        long,
        env = "XFCHAT_WEBHOOK_EVENTS",
        value_delimiter = ',',
        default_value = "message.offline",
        global = true
    )]
    pub webhook_events: Vec<String>,
    /// Most events in one webhook request.
    #[arg(
        long,
        env = "XFCHAT_WEBHOOK_BATCH",
        default_value_t = 100,
        global = true
    )]
    pub webhook_batch: i64,
    /// How long the receiver has to answer a webhook request before it is retried.
    #[arg(
        long,
        env = "XFCHAT_WEBHOOK_TIMEOUT_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub webhook_timeout_ms: u64,
    /// Secret of the app's own HS256 tokens, at least 32 bytes: such a token is accepted like
    /// XFChat's, its `sub` naming the user.
    #[arg(
        long,
        env = "XFCHAT_EXTERNAL_JWT_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub external_jwt_secret: Option<String>,
    /// URL of the app's JSON Web Key Set: RS256 and ES256 tokens signed with its keys are
    /// accepted like XFChat's.
    #[arg(long, env = "XFCHAT_EXTERNAL_JWKS_URL", global = true)]
    pub external_jwks_url: Option<String>,
    /// How often the key set is fetched again (and at most how often an unknown `kid` makes
    /// it fetched early).
    #[arg(
        long,
        env = "XFCHAT_EXTERNAL_JWKS_REFRESH_SECS",
        default_value_t = 300,
        global = true
    )]
    pub external_jwks_refresh_secs: u64,
    /// The `iss` the app's tokens must carry; unchecked when unset.
    #[arg(long, env = "XFCHAT_EXTERNAL_JWT_ISSUER", global = true)]
    pub external_jwt_issuer: Option<String>,
    /// The `aud` the app's tokens must carry; unchecked when unset.
    #[arg(long, env = "XFCHAT_EXTERNAL_JWT_AUDIENCE", global = true)]
    pub external_jwt_audience: Option<String>,
    /// The claim of the app's tokens that holds the user's display name.
    #[arg(
        long,
        env = "XFCHAT_EXTERNAL_JWT_NAME_CLAIM",
        default_value = "name",
        global = true
    )]
    pub external_jwt_name_claim: String,
    /// Key of the routes under /api/service/ (`Authorization: Bearer <key>`), at least 32
    /// bytes; they answer 401 without it.
    #[arg(
        long,
        env = "XFCHAT_SERVICE_KEY",
        hide_env_values = true,
        global = true
    )]
    pub service_key: Option<String>,
}

/// Validated integration settings.
#[derive(Clone, Debug, Default)]
pub struct Integrations {
    pub webhook: Option<WebhookConfig>,
    pub external: Option<ExternalJwtConfig>,
    pub service_key: Option<Secret>,
}

#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub url: url::Url,
    pub secret: Secret,
    /// The events to write, as the database function takes them: comma-separated.
    pub events: String,
    pub batch: i64,
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct ExternalJwtConfig {
    pub secret: Option<Secret>,
    pub jwks_url: Option<url::Url>,
    pub jwks_refresh: Duration,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub name_claim: String,
}

fn secret(name: &str, value: &Option<String>) -> Result<Option<Secret>, ConfigError> {
    match value.as_deref().filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) if s.len() < 32 => Err(invalid(format!(
            "{name} is too short ({} bytes): it must be at least 32 bytes",
            s.len()
        ))),
        Some(s) => Ok(Some(Secret(s.to_owned()))),
    }
}

fn http_url(name: &str, value: &Option<String>) -> Result<Option<url::Url>, ConfigError> {
    let Some(raw) = value.as_deref().filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    match url::Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(Some(u)),
        _ => Err(invalid(format!(
            "{name} must be an http:// or https:// URL"
        ))),
    }
}

impl IntegrationSettings {
    pub fn validate(&self) -> Result<Integrations, ConfigError> {
        let webhook = match http_url("XFCHAT_WEBHOOK_URL", &self.webhook_url)? {
            None => None,
            Some(url) => {
                let secret =
                    secret("XFCHAT_WEBHOOK_SECRET", &self.webhook_secret)?.ok_or_else(|| {
                        invalid("XFCHAT_WEBHOOK_SECRET is required with XFCHAT_WEBHOOK_URL")
                    })?;
                let events: Vec<&str> = self
                    .webhook_events
                    .iter()
                    .map(|e| e.trim())
                    .filter(|e| !e.is_empty())
                    .collect();
                if let Some(bad) = events.iter().find(|e| !WEBHOOK_EVENTS.contains(e)) {
                    return Err(invalid(format!(
                        "XFCHAT_WEBHOOK_EVENTS: unknown event {bad:?}; known: {}",
                        WEBHOOK_EVENTS.join(", ")
                    )));
                }
                if events.is_empty() {
                    return Err(invalid("XFCHAT_WEBHOOK_EVENTS names no event"));
                }
                if !(1..=1000).contains(&self.webhook_batch) {
                    return Err(invalid("XFCHAT_WEBHOOK_BATCH must be 1 to 1000"));
                }
                Some(WebhookConfig {
                    url,
                    secret,
                    events: events.join(","),
                    batch: self.webhook_batch,
                    timeout: Duration::from_millis(self.webhook_timeout_ms.max(1)),
                })
            }
        };
        let external_secret = secret("XFCHAT_EXTERNAL_JWT_SECRET", &self.external_jwt_secret)?;
        let jwks_url = http_url("XFCHAT_EXTERNAL_JWKS_URL", &self.external_jwks_url)?;
        let external = (external_secret.is_some() || jwks_url.is_some()).then(|| {
            let set = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
            ExternalJwtConfig {
                secret: external_secret,
                jwks_url,
                jwks_refresh: Duration::from_secs(self.external_jwks_refresh_secs.max(1)),
                issuer: set(&self.external_jwt_issuer),
                audience: set(&self.external_jwt_audience),
                name_claim: self.external_jwt_name_claim.clone(),
            }
        });
        Ok(Integrations {
            webhook,
            external,
            service_key: secret("XFCHAT_SERVICE_KEY", &self.service_key)?,
        })
    }
}
