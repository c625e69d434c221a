//! Webhooks: the outbox's events POSTed to the app's receiver in batches, signed, at least once.
//!
//! A request's body is `{"sent_at": <unix seconds>, "events": [...]}`, signed with
//! `X-XFChat-Signature: sha256=<hex HMAC-SHA256 of the raw body>` and carrying
//! `X-XFChat-Timestamp: <sent_at>`: the timestamp is inside what is signed, so a receiver that
//! checks the signature and refuses an old `sent_at` refuses replays. A 2xx answer takes the
//! batch; anything else (an error answer, a timeout, no connection) leaves it in the outbox,
//! due again after a backoff. Each event keeps its id across attempts.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::config::WebhookConfig;
use crate::db::webhooks::{self, Event};
use crate::db::{Db, Op};
use crate::metrics as m;

/// How long a deliverer holds the events it took beyond the request's timeout.
const LEASE_MARGIN: Duration = Duration::from_secs(10);
/// How often an idle deliverer looks for new events.
const IDLE: Duration = Duration::from_millis(250);
/// Longest wait between two attempts of one event.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How often the backlog gauges are read.
const GAUGES: Duration = Duration::from_secs(5);

/// `sha256=<hex>`: the signature of `body` with `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The wait before attempt `attempts + 1`: 1 s doubling to [`MAX_BACKOFF`].
fn backoff(attempts: i32) -> Duration {
    let exp = attempts.clamp(1, 16) as u32 - 1;
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

fn event_json(e: &Event) -> Value {
    let mut data = json!({
        "chat_id": e.chat_id,
        "message": {
            "id": e.message_id,
            "chat_id": e.chat_id,
            "seq": e.seq,
            "sender_id": e.sender_id,
            "system": e.sender_id.0 == 0,
            "body": e.body,
            "created_at": e.sent_at,
            "reply_to": e.reply_to,
            "deleted": e.deleted,
        },
    });
    if let Some(r) = e.recipient_id {
        data["recipient_id"] = json!(r);
    }
    json!({
        "id": e.id.to_string(),
        "type": e.kind,
        "created_at": e.created_at,
        "attempt": e.attempts,
        "data": data,
    })
}

/// Delivers the outbox until `stop`; runs on every node, which share the work.
pub async fn run(db: Db, config: WebhookConfig, stop: CancellationToken) {
    let client = match reqwest::Client::builder()
        .timeout(config.timeout)
        .user_agent(concat!("xfchat-webhook/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks are off: no HTTP client");
            return;
        }
    };
    tokio::spawn(gauges(db.clone(), stop.clone()));
    let lease = config.timeout + LEASE_MARGIN;
    loop {
        let sent = match round(&db, &client, &config, lease).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "webhook outbox unreadable");
                0
            }
        };
        if sent == 0 {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(IDLE) => {}
            }
        } else if stop.is_cancelled() {
            return;
        }
    }
}

/// Takes one batch and sends it; answers how many events it took.
async fn round(
    db: &Db,
    client: &reqwest::Client,
    config: &WebhookConfig,
    lease: Duration,
) -> crate::error::AppResult<usize> {
    let events = {
        let mut conn = db.conn(Op::Webhooks).await?;
        let events = webhooks::claim(&mut conn, config.batch, lease).await?;
        conn.done().await?;
        events
    };
    if events.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    let sent_at = chrono::Utc::now().timestamp();
    let body = json!({
        "sent_at": sent_at,
        "events": events.iter().map(event_json).collect::<Vec<_>>(),
    })
    .to_string();
    let signature = sign(config.secret.expose().as_bytes(), body.as_bytes());
    let answer = client
        .post(config.url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-XFChat-Signature", signature)
        .header("X-XFChat-Timestamp", sent_at.to_string())
        .body(body)
        .send()
        .await;
    let failure = match answer {
        Ok(r) if r.status().is_success() => None,
        Ok(r) => Some(format!("the receiver answered {}", r.status().as_u16())),
        // Never the URL, which may carry a secret of the receiver's.
        Err(e) if e.is_timeout() => Some("the receiver did not answer in time".to_owned()),
        Err(e) if e.is_connect() => Some("no connection to the receiver".to_owned()),
        Err(e) => Some(format!("request failed: {}", e.without_url())),
    };
    let mut conn = db.conn(Op::Webhooks).await?;
    match &failure {
        None => {
            webhooks::delivered(&mut conn, &ids).await?;
            metrics::counter!(m::WEBHOOK_REQUESTS, "outcome" => "ok").increment(1);
            metrics::counter!(m::WEBHOOK_DELIVERED).increment(ids.len() as u64);
        }
        Some(why) => {
            let attempts = events.iter().map(|e| e.attempts).min().unwrap_or(1);
            webhooks::retry(&mut conn, &ids, backoff(attempts), why).await?;
            metrics::counter!(m::WEBHOOK_REQUESTS, "outcome" => "failed").increment(1);
            tracing::warn!(events = ids.len(), attempts, error = %why, "webhook request failed; retrying");
        }
    }
    conn.done().await?;
    Ok(if failure.is_some() { 0 } else { ids.len() })
}

/// Keeps the backlog gauges current.
async fn gauges(db: Db, stop: CancellationToken) {
    let mut every = tokio::time::interval(GAUGES);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let Ok(mut conn) = db.conn(Op::Webhooks).await else {
            continue;
        };
        if let Ok((count, age)) = webhooks::backlog(&mut conn).await {
            metrics::gauge!(m::WEBHOOK_BACKLOG).set(count as f64);
            metrics::gauge!(m::WEBHOOK_OLDEST).set(age);
        }
        let _ = conn.done().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hex_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_backoff_doubles_from_a_second_to_five_minutes() {
        let waits: Vec<u64> = (1..=11).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }
}
