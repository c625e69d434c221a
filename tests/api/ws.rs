//! A WebSocket test client speaking the server's protocol through the shared frame types.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use xfchat::protocol::{ClientFrame, Codec, ServerFrame};

use uuid::Uuid;
use xfchat::ids::ChatId;

use crate::common::{TestApp, User};

pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub codec: Codec,
    /// The epoch the server's `hello` named.
    pub epoch: Uuid,
    /// Whether `presence` frames are read like any other; by default they are skipped, being
    /// about friends' sockets, not about what a test checks (the presence tests read them).
    pub presence: bool,
}

/// How long a test waits for a frame it expects.
pub const WAIT: Duration = Duration::from_secs(15);

impl TestApp {
    pub async fn ws(&self, user: &User) -> Ws {
        self.ws_with(user, Codec::Json).await
    }

    pub async fn ws_with(&self, user: &User, codec: Codec) -> Ws {
        Ws::connect(&self.base, user, codec).await
    }
}

impl Ws {
    /// A socket of `user` to the server at `base`.
    pub async fn connect(base: &str, user: &User, codec: Codec) -> Ws {
        let url = format!("{}/ws", base.replace("http://", "ws://"));
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", user.token).parse().unwrap(),
        );
        req.headers_mut()
            .insert("sec-websocket-protocol", codec.protocol().parse().unwrap());
        let (stream, res) = tokio_tungstenite::connect_async(req)
            .await
            .expect("websocket connects");
        assert_eq!(res.headers()["sec-websocket-protocol"], codec.protocol());
        let mut ws = Ws {
            stream,
            codec,
            epoch: Uuid::nil(),
            presence: false,
        };
        // Every socket starts with the history's epoch.
        match ws.next().await {
            ServerFrame::Hello { epoch } => ws.epoch = epoch,
            other => panic!("the first frame is not hello: {other:?}"),
        }
        ws
    }

    pub async fn send(&mut self, frame: &ClientFrame) {
        self.stream
            .send(self.codec.encode(frame))
            .await
            .expect("send a frame");
    }

    pub async fn send_raw(&mut self, msg: WsMessage) {
        self.stream.send(msg).await.expect("send a raw frame");
    }

    /// The next protocol frame, skipping WebSocket pings and pongs; panics on close or timeout.
    pub async fn next(&mut self) -> ServerFrame {
        loop {
            let msg = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("a frame arrives in time")
                .expect("the socket is open")
                .expect("the socket reads");
            match msg {
                WsMessage::Text(_) | WsMessage::Binary(_) => {
                    let frame = Codec::decode(&msg).expect("a server frame decodes");
                    if self.presence || !matches!(frame, ServerFrame::Presence { .. }) {
                        return frame;
                    }
                }
                WsMessage::Close(frame) => panic!("closed: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The next protocol frame for which `wanted` holds, skipping the others.
    pub async fn next_matching(&mut self, wanted: impl Fn(&ServerFrame) -> bool) -> ServerFrame {
        loop {
            let frame = self.next().await;
            if wanted(&frame) {
                return frame;
            }
        }
    }

    /// Reads until the server closes; returns the close frame (if any) and the frames before it.
    pub async fn until_closed(
        &mut self,
        within: Duration,
    ) -> (Option<CloseFrame>, Vec<ServerFrame>) {
        let mut frames = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("the server closes in time");
            match next {
                Some(Ok(WsMessage::Close(frame))) => return (frame, frames),
                Some(Ok(msg @ (WsMessage::Text(_) | WsMessage::Binary(_)))) => {
                    frames.push(Codec::decode(&msg).expect("a server frame decodes"))
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return (None, frames),
            }
        }
    }

    /// Asserts nothing but pings (and presence frames, unless read) arrive for `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        while let Ok(next) = tokio::time::timeout_at(deadline, self.stream.next()).await {
            match next {
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                Some(Ok(msg @ (WsMessage::Text(_) | WsMessage::Binary(_))))
                    if !self.presence
                        && matches!(Codec::decode(&msg), Ok(ServerFrame::Presence { .. })) => {}
                other => panic!("expected silence, got {other:?}"),
            }
        }
    }
}

pub fn send(chat: i64, body: &str) -> (Uuid, ClientFrame) {
    let id = Uuid::new_v4();
    (
        id,
        ClientFrame::Send {
            chat_id: ChatId(chat),
            client_msg_id: id,
            body: body.to_owned(),
            reply_to: None,
            attachments: Vec::new(),
        },
    )
}

pub fn sync(chat: i64, after_seq: i64) -> ClientFrame {
    ClientFrame::Sync {
        chat_id: ChatId(chat),
        after_seq,
        limit: None,
        reference: None,
    }
}

/// Reads message frames of `chat` until `synced` or `want` messages; returns their seqs.
pub async fn read_seqs(ws: &mut Ws, want: usize) -> Vec<i64> {
    let mut seqs = Vec::new();
    while seqs.len() < want {
        match ws.next().await {
            ServerFrame::Message { message } => seqs.push(message.seq),
            ServerFrame::Synced { .. }
            | ServerFrame::Typing { .. }
            | ServerFrame::Read { .. }
            | ServerFrame::Chat { .. }
            | ServerFrame::Members { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    seqs
}

pub async fn stored(app: &TestApp) -> i64 {
    let pool = app.db.pool().await;
    sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&pool)
        .await
        .unwrap()
}
