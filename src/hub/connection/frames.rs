//! What a connection does with each client frame: sends go to the persister, syncs page
//! through history, read markers and typing are checked and announced.

use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::Connection;
use crate::db::messages::{self, NewMessage};
use crate::db::{chats, Op};
use crate::error::AppError;
use crate::hub::persist::{ReplyTo, SendRequest};
use crate::ids::ChatId;
use crate::metrics as m;
use crate::protocol::{ClientFrame, Encoded, ServerFrame};

use super::Written;

const SYNC_PAGE: i64 = 200;

impl Connection {
    /// Handles one client frame; returns the frame to answer with, if any.
    pub(super) async fn on_frame(&mut self, frame: ClientFrame) -> Option<ServerFrame> {
        match frame {
            ClientFrame::Send {
                chat_id,
                client_msg_id,
                body,
            } => self.on_send(chat_id, client_msg_id, body),
            ClientFrame::Sync {
                chat_id,
                after_seq,
                limit,
            } => self
                .on_sync(chat_id, after_seq, limit)
                .await
                .err()
                .map(|e| error_frame(&e)),
            ClientFrame::Read { chat_id, seq } => self
                .on_read(chat_id, seq)
                .await
                .err()
                .map(|e| error_frame(&e)),
            ClientFrame::Typing { chat_id } => {
                self.on_typing(chat_id).await.err().map(|e| error_frame(&e))
            }
            ClientFrame::Ping { nonce } => Some(ServerFrame::Pong { nonce }),
        }
    }

    fn on_send(&mut self, chat: ChatId, client_msg_id: Uuid, body: String) -> Option<ServerFrame> {
        let refuse =
            |code: &str, text: String| Some(ServerFrame::error(code, text, Some(client_msg_id)));
        if let Err(e) = self.budget("send") {
            return refuse(e.code(), "too many sends; slow down".into());
        }
        if let Err(e) = messages::check_body(&body, self.hub.message_max_bytes) {
            return refuse(e.code(), e.to_string());
        }
        if self.hub.faults.panics_connection(&body) {
            panic!("fault injected into a connection task");
        }
        let request = SendRequest {
            message: NewMessage {
                chat,
                sender: self.user,
                client_msg_id,
                body,
            },
            reply: ReplyTo::Socket {
                received: Instant::now(),
                user: self.user,
                conn: self.inbox.id,
            },
        };
        if self.hub.persister.submit(request).is_err() {
            return refuse(
                "overloaded",
                "the server is overloaded; retry shortly".into(),
            );
        }
        self.in_flight += 1;
        None
    }

    /// Writes every stored message after `after_seq` (up to `limit`) that this socket has not
    /// had yet, then `synced`. Live messages queued meanwhile are written after, skipping those
    /// the sync covered.
    async fn on_sync(
        &mut self,
        chat: ChatId,
        after_seq: i64,
        limit: Option<i64>,
    ) -> Result<(), AppError> {
        if after_seq < 0 || limit.is_some_and(|l| l < 1) {
            return Err(AppError::invalid("after_seq must be >= 0 and limit >= 1"));
        }
        self.budget("sync")?;
        let mut remaining = limit.unwrap_or(i64::MAX);
        let last_seq = {
            let mut conn = self.hub.db.conn(Op::Sync).await?;
            chats::get(&mut conn, self.user, chat).await?.last_seq
        };
        // Past the chat's end there is nothing to send: the sync is empty, and the positions
        // below stay within the chat's seqs, so no arithmetic on a client number can overflow.
        let after_seq = after_seq.min(last_seq);
        let already = self.written.get(&chat).copied();
        let mut cursor = after_seq;
        while cursor < last_seq && remaining > 0 {
            let page = {
                let mut conn = self.hub.db.conn(Op::Sync).await?;
                messages::page(
                    &mut conn,
                    chat,
                    Some(cursor),
                    Some(last_seq + 1),
                    SYNC_PAGE.min(remaining),
                )
                .await?
            };
            let Some(last) = page.last() else { break };
            cursor = last.seq;
            for message in page {
                remaining -= 1;
                if already.is_some_and(|w| (w.lo..=w.hi).contains(&message.seq)) {
                    continue;
                }
                let frame = Encoded::new(ServerFrame::Message { message });
                if !self.write(frame.message(self.codec)).await {
                    return Ok(());
                }
            }
        }
        let written = self.written.entry(chat).or_insert(Written {
            lo: after_seq + 1,
            hi: cursor,
        });
        written.lo = written.lo.min(after_seq + 1);
        written.hi = written.hi.max(cursor);
        self.reply(ServerFrame::Synced {
            chat_id: chat,
            last_seq: cursor,
        })
        .await;
        Ok(())
    }

    async fn on_read(&mut self, chat: ChatId, seq: i64) -> Result<(), AppError> {
        self.budget("read")?;
        let members = {
            let mut conn = self.hub.db.conn(Op::Read).await?;
            if !chats::mark_read(&mut conn, chat, self.user, seq).await? {
                return Ok(());
            }
            chats::member_ids(&mut conn, chat).await?
        };
        self.hub.notify(
            &members,
            None,
            ServerFrame::Read {
                chat_id: chat,
                user_id: self.user,
                seq,
            },
        );
        Ok(())
    }

    async fn on_typing(&mut self, chat: ChatId) -> Result<(), AppError> {
        if self.typing.check().is_err() {
            metrics::counter!(m::WS_RATE_LIMITED, "kind" => "typing").increment(1);
            return Err(AppError::RateLimited(Duration::from_millis(500)));
        }
        let members = {
            let mut conn = self.hub.db.conn(Op::Typing).await?;
            chats::member_ids(&mut conn, chat).await?
        };
        if !members.contains(&self.user) {
            return Err(AppError::NotFound);
        }
        let frame = ServerFrame::Typing {
            chat_id: chat,
            user_id: self.user,
        };
        self.hub.notify(&members, Some(self.inbox.id), frame);
        Ok(())
    }
}

impl Connection {
    /// Takes one unit of the user's budget for sends, syncs and read markers, which all their
    /// sockets and HTTP share; counts a refusal by frame kind.
    fn budget(&self, kind: &'static str) -> Result<(), AppError> {
        self.hub.throttles.user_action(self.user).inspect_err(|_| {
            metrics::counter!(m::WS_RATE_LIMITED, "kind" => kind).increment(1);
        })
    }
}

fn error_frame(e: &AppError) -> ServerFrame {
    ServerFrame::error(e.code(), e.to_string(), None)
}
