//! What a connection does with each client frame: sends go to the persister, syncs and resumes
//! stream from the database into the socket's ordered stream, read markers and typing are
//! checked and announced.

use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::stream::Stop;
use super::{Connection, End};
use crate::db::messages::{self, NewMessage};
use crate::db::{chats, Op};
use crate::error::AppError;
use crate::hub::persist::{ReplyTo, SendRequest};
use crate::ids::ChatId;
use crate::metrics as m;
use crate::protocol::{ClientFrame, ErrorCode, Ref, ServerFrame};

/// Most chats one `resume` may name.
pub const RESUME_MAX_CHATS: usize = 1000;

impl Connection {
    /// Handles one client frame; returns the frame to answer with, if any. Errors carry the
    /// frame's `ref`. Syncs, read markers and typing, whose database calls would otherwise
    /// size every socket's task by their futures, run boxed; sends do not.
    pub(super) async fn on_frame(
        &mut self,
        frame: ClientFrame,
    ) -> Result<Option<ServerFrame>, End> {
        if frame.reference().is_some_and(Ref::is_too_long) {
            let e = AppError::invalid(format!("ref: at most {} bytes", Ref::MAX_BYTES));
            return Ok(Some(error_frame(&e, None)));
        }
        let answer = match frame {
            ClientFrame::Send {
                chat_id,
                client_msg_id,
                body,
            } => self.on_send(chat_id, client_msg_id, body),
            ClientFrame::Sync {
                chat_id,
                after_seq,
                limit,
                reference,
            } => {
                if after_seq < 0 || limit.is_some_and(|l| l < 1) {
                    let e = AppError::invalid("after_seq must be >= 0 and limit >= 1");
                    return Ok(Some(error_frame(&e, reference)));
                }
                if let Err(e) = self.budget("sync") {
                    return Ok(Some(error_frame(&e, reference)));
                }
                Box::pin(self.on_sync(chat_id, after_seq, limit, reference)).await?
            }
            ClientFrame::Resume {
                positions,
                reference,
            } => {
                if positions.len() > RESUME_MAX_CHATS || positions.values().any(|&p| p < 0) {
                    let e = AppError::invalid(format!(
                        "positions: at most {RESUME_MAX_CHATS} chats, each at a seq >= 0"
                    ));
                    return Ok(Some(error_frame(&e, reference)));
                }
                if let Err(e) = self.budget("sync") {
                    return Ok(Some(error_frame(&e, reference)));
                }
                for (chat, after_seq) in positions {
                    let sync = self.on_sync(chat, after_seq, None, reference.clone());
                    if let Some(frame) = Box::pin(sync).await? {
                        self.reply(frame).await?;
                    }
                }
                None
            }
            ClientFrame::Read {
                chat_id,
                seq,
                reference,
            } => Box::pin(self.on_read(chat_id, seq))
                .await
                .err()
                .map(|e| error_frame(&e, reference)),
            ClientFrame::Typing { chat_id, reference } => Box::pin(self.on_typing(chat_id))
                .await
                .err()
                .map(|e| error_frame(&e, reference)),
            ClientFrame::Ping { nonce, reference } => Some(ServerFrame::Pong { nonce, reference }),
        };
        Ok(answer)
    }

    fn on_send(&mut self, chat: ChatId, client_msg_id: Uuid, body: String) -> Option<ServerFrame> {
        let refuse = |code: ErrorCode, text: String| {
            crate::metrics::send_refused(code);
            Some(ServerFrame::error(code, text, Some(client_msg_id.into())))
        };
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
            let e = AppError::Overloaded;
            return refuse(e.code(), e.to_string());
        }
        self.in_flight.entry(client_msg_id).or_insert((chat, 0)).1 += 1;
        None
    }

    /// Sets the chat's cursor to `after_seq` (clamped to the chat's end) and streams every
    /// stored message after it (up to `limit`), then `synced`: live messages of the chat come
    /// after it, in order, from where the stream stopped. Returns the error to answer with.
    async fn on_sync(
        &mut self,
        chat: ChatId,
        after_seq: i64,
        limit: Option<i64>,
        reference: Option<Ref>,
    ) -> Result<Option<ServerFrame>, End> {
        let last_seq = {
            let found = match self.hub.db.conn(Op::Sync).await {
                Ok(mut conn) => chats::get(&mut conn, self.user, chat).await,
                Err(e) => Err(e),
            };
            match found {
                Ok(view) => view.last_seq,
                Err(e) => {
                    // The database failed, not the request: the position stands all the same,
                    // so a message of this chat arriving live is written only after the gap
                    // before it is filled from the database, never from the live tail on. (A
                    // cursor alone reads nothing: only live messages, which reach members only,
                    // make it read.)
                    if e.code().fault() == "server" {
                        self.cursors.insert(chat, after_seq);
                    }
                    return Ok(Some(error_frame(&e, reference)));
                }
            }
        };
        // Past the chat's end there is nothing to send: the sync is empty, and the positions
        // stay within the chat's seqs, so no arithmetic on a client number can overflow.
        let after_seq = after_seq.min(last_seq);
        let limit = limit.unwrap_or(i64::MAX);
        let reached = match self.stream(chat, after_seq, None, limit).await {
            Ok(reached) => reached,
            Err(Stop::End(end)) => return Err(end),
            Err(Stop::Db(e)) => return Ok(Some(error_frame(&e, reference))),
        };
        self.reply(ServerFrame::Synced {
            chat_id: chat,
            last_seq: reached,
            more: reached < last_seq,
            reference,
        })
        .await?;
        Ok(None)
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

fn error_frame(e: &AppError, reference: Option<Ref>) -> ServerFrame {
    ServerFrame::error(e.code(), e.to_string(), reference)
}
