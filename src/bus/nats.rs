//! The bus over core NATS subjects, for operators who already run NATS: `<prefix>.<channel>`,
//! with the channels and payloads of the PostgreSQL bus. Core NATS delivers at most once
//! and a group commit announces itself only after it committed, so a node that dies between the
//! two, or a notice lost on the way, is found by the same position checks as on PostgreSQL.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{BusError, Channel, Dest, Inbox, Listening, Notice, Transport};

/// How long connecting may take, and how often the client pings the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const PING_INTERVAL: Duration = Duration::from_secs(5);

pub struct Nats {
    /// The server's URL without credentials; they are in `auth`.
    url: String,
    auth: Auth,
    node: String,
    /// The subject of each channel, in [`Channel`]'s order.
    subjects: [String; 2],
    /// The connection that publishes; it reconnects on its own and buffers meanwhile.
    client: async_nats::Client,
}

impl Nats {
    /// Connects the publishing side; fails when no NATS server answers at `url`.
    pub async fn connect(url: &str, prefix: &str, node: &str) -> Result<Self, BusError> {
        let (url, auth) = Auth::split(url);
        let client = options(node, &auth)
            .connect(&url)
            .await
            .map_err(|e| BusError::Nats(e.to_string()))?;
        Ok(Self {
            url,
            auth,
            node: node.to_owned(),
            subjects: ["messages", "events"].map(|channel| format!("{prefix}.{channel}")),
            client,
        })
    }

    fn subject(&self, channel: Channel) -> String {
        self.subjects[channel as usize].clone()
    }

    /// A node's inbox: below the events subject, which does not match it.
    fn inbox_subject(&self, inbox: &Inbox) -> String {
        format!("{}.{}", self.subject(Channel::Events), inbox.tag())
    }
}

/// Credentials from the URL (`nats://user:password@host` or `nats://token@host`), which the
/// client library does not take from it by itself.
#[derive(Clone)]
enum Auth {
    None,
    Token(String),
    UserPassword(String, String),
}

impl Auth {
    /// The URL without its credentials, and the credentials.
    fn split(url: &str) -> (String, Auth) {
        let Ok(mut parsed) = url::Url::parse(url) else {
            return (url.to_owned(), Auth::None);
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let auth = match (parsed.username(), parsed.password()) {
            ("", _) => Auth::None,
            (token, None) => Auth::Token(decode(token)),
            (user, Some(password)) => Auth::UserPassword(decode(user), decode(password)),
        };
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        (parsed.to_string(), auth)
    }
}

fn options(node: &str, auth: &Auth) -> async_nats::ConnectOptions {
    let options = match auth.clone() {
        Auth::None => async_nats::ConnectOptions::new(),
        Auth::Token(token) => async_nats::ConnectOptions::with_token(token),
        Auth::UserPassword(user, password) => {
            async_nats::ConnectOptions::with_user_and_password(user, password)
        }
    };
    options
        .name(format!("xfchat {node}"))
        .connection_timeout(CONNECT_TIMEOUT)
        .ping_interval(PING_INTERVAL)
}

impl Transport for Nats {
    /// The client is shared and reconnects on its own.
    type Link = ();

    async fn send(&self, _: &mut (), payloads: Vec<(Dest, String)>) -> Result<(), BusError> {
        for (dest, payload) in payloads {
            let subject = match dest {
                Dest::All(channel) => self.subject(channel),
                Dest::Inbox(inbox) => self.inbox_subject(&inbox),
            };
            self.client
                .publish(subject, payload.into())
                .await
                .map_err(|e| BusError::Nats(e.to_string()))?;
        }
        Ok(())
    }

    async fn listen(&self, inbox: &Inbox) -> Result<Listening, BusError> {
        let nats = |e: &dyn std::fmt::Display| BusError::Nats(e.to_string());
        // The listening connection does not reconnect on its own: a lost connection, or a
        // subscription that fell behind and dropped messages, ends the notices.
        let (lost_tx, mut lost) = mpsc::channel(4);
        let client = options(&self.node, &self.auth)
            .max_reconnects(1)
            .event_callback(move |event| {
                let lost_tx = lost_tx.clone();
                async move {
                    use async_nats::Event::*;
                    if matches!(event, Disconnected | Closed | SlowConsumer(_)) {
                        let _ = lost_tx.try_send(event.to_string());
                    }
                }
            })
            .connect(&self.url)
            .await
            .map_err(|e| nats(&e))?;
        let mut messages =
            (client.subscribe(self.subject(Channel::Messages)).await).map_err(|e| nats(&e))?;
        let mut events =
            (client.subscribe(self.subject(Channel::Events)).await).map_err(|e| nats(&e))?;
        let mut inbox =
            (client.subscribe(self.inbox_subject(inbox)).await).map_err(|e| nats(&e))?;
        // The server has the subscriptions once it answered a ping: from here nothing is missed.
        client.flush().await.map_err(|e| nats(&e))?;
        Ok(Listening::start(|tx| async move {
            let _client = client;
            loop {
                let (channel, message) = tokio::select! {
                    m = messages.next() => (Channel::Messages, m),
                    m = events.next() => (Channel::Events, m),
                    m = inbox.next() => (Channel::Events, m),
                    why = lost.recv() => {
                        tracing::warn!(why = why.as_deref().unwrap_or("closed"), "bus listener lost NATS");
                        return;
                    }
                };
                let Some(message) = message else { return };
                let Ok(payload) = String::from_utf8(message.payload.into()) else {
                    continue;
                };
                if tx.send(Notice { channel, payload }).await.is_err() {
                    return;
                }
            }
        }))
    }
}
