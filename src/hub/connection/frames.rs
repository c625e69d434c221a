//! What a connection does with each client frame: sends go to the persister, syncs and resumes
//! stream from the database into the socket's ordered stream, read markers and typing are
//! checked and announced.

use tokio::time::Instant;
use uuid::Uuid;

use super::fetch::Ask;
use super::{Connection, End};
use crate::db::messages::{self, NewMessage};
use crate::db::{chats, Op};
use crate::error::AppError;
use crate::hub::persist::{ReplyTo, SendRequest};
use crate::ids::ChatId;
use crate::metrics as m;

/// What a send may carry besides its text.
pub(super) struct Extras {
    reply_to: Option<i64>,
    attachments: Vec<Uuid>,
}
use crate::protocol::{ClientFrame, EntryKind, ErrorCode, Ref, ServerFrame};

/// Most chats one `resume` may name.
pub const RESUME_MAX_CHATS: usize = 1000;

/// Chats of a `resume` that cost one unit of the user's budget.
const RESUME_CHATS_PER_UNIT: usize = 10;

/// The longest a socket stops reading after a frame was refused for the user's budget: well
/// within the pong timeout, so a paused socket never looks dead.
const READ_PAUSE_MAX: std::time::Duration = std::time::Duration::from_secs(2);

impl Connection {
    /// Handles one client frame; returns the frame to answer with, if any. Errors carry the
    /// frame's `ref`. Syncs, read markers and typing, whose database calls would otherwise
    /// size every socket's task by their futures, run boxed; sends do not.
    pub(super) async fn on_frame(
        &mut self,
        frame: ClientFrame,
        units: u32,
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
                reply_to,
                attachments,
            } => self.on_send(
                chat_id,
                client_msg_id,
                body,
                Extras {
                    reply_to,
                    attachments,
                },
            ),
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
                if let Err(e) = self.budget("sync", 1) {
                    return Ok(Some(error_frame(&e, reference)));
                }
                self.work.asks.push_back(Ask::Sync {
                    chat: chat_id,
                    after: after_seq,
                    remaining: limit.unwrap_or(i64::MAX),
                    reference,
                    started: false,
                });
                None
            }
            ClientFrame::Resume {
                positions,
                epoch,
                reference,
            } => {
                if positions.len() > RESUME_MAX_CHATS || positions.values().any(|&p| p < 0) {
                    let e = AppError::invalid(format!(
                        "positions: at most {RESUME_MAX_CHATS} chats, each at a seq >= 0"
                    ));
                    return Ok(Some(error_frame(&e, reference)));
                }
                // A resume costs by the chats it names: one unit per ten.
                let units = positions.len().div_ceil(RESUME_CHATS_PER_UNIT).max(1) as u32;
                if let Err(e) = self.budget("sync", units) {
                    return Ok(Some(error_frame(&e, reference)));
                }
                if !positions.is_empty() {
                    self.work.asks.push_back(Ask::Resume {
                        positions,
                        epoch,
                        reference,
                    });
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
            ClientFrame::Edit {
                chat_id,
                seq,
                body,
                reference,
            } => {
                self.amend(chat_id, seq, EntryKind::Edit, body, reference)
                    .await
            }
            ClientFrame::Delete {
                chat_id,
                seq,
                reference,
            } => {
                self.amend(chat_id, seq, EntryKind::Delete, String::new(), reference)
                    .await
            }
            ClientFrame::React {
                chat_id,
                seq,
                emoji,
                reference,
            } => {
                self.amend(chat_id, seq, EntryKind::React, emoji, reference)
                    .await
            }
            ClientFrame::Unreact {
                chat_id,
                seq,
                emoji,
                reference,
            } => {
                self.amend(chat_id, seq, EntryKind::Unreact, emoji, reference)
                    .await
            }
            ClientFrame::Ping { nonce, reference } => match self.budget("ping", units) {
                Ok(()) => Some(ServerFrame::Pong { nonce, reference }),
                Err(e) => Some(error_frame(&e, reference)),
            },
        };
        Ok(answer)
    }

    fn on_send(
        &mut self,
        chat: ChatId,
        client_msg_id: Uuid,
        body: String,
        extras: Extras,
    ) -> Option<ServerFrame> {
        let Extras {
            reply_to,
            attachments,
        } = extras;
        let refuse = |code: ErrorCode, text: String| {
            crate::metrics::send_refused(code);
            Some(ServerFrame::error(code, text, Some(client_msg_id.into())))
        };
        if let Err(e) = self.budget("send", 1) {
            crate::metrics::send_refused(e.code());
            let frame = ServerFrame::error(
                e.code(),
                "too many sends; slow down",
                Some(client_msg_id.into()),
            );
            return Some(frame.retry_after(e.retry_after()));
        }
        if let Err(e) = messages::check_send(&body, &attachments, self.hub.message_max_bytes)
            .and_then(|()| messages::check_reply(reply_to))
        {
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
                reply_to,
                attachments: attachments.into_boxed_slice(),
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

    async fn on_read(&mut self, chat: ChatId, seq: i64) -> Result<(), AppError> {
        self.budget("read", 1)?;
        let members = {
            let mut conn = self.hub.db.conn(Op::Read).await?;
            if !chats::mark_read(&mut conn, chat, self.user, seq).await? {
                return Ok(());
            }
            let members = chats::audience(&mut conn, chat, self.user).await?;
            conn.done().await?;
            members
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
        self.budget("typing", 1)?;
        self.hub.throttles.typing(self.user).inspect_err(|_| {
            metrics::counter!(m::WS_RATE_LIMITED, "kind" => "typing").increment(1);
        })?;
        let members = {
            let mut conn = self.hub.db.conn(Op::Typing).await?;
            chats::audience(&mut conn, chat, self.user).await?
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
    /// Takes `units` of the user's budget, which all their sockets and HTTP share; counts a
    /// refusal by frame kind, and pauses reading this socket until the budget could pay again
    /// (at most [`READ_PAUSE_MAX`]).
    pub(super) fn budget(&mut self, kind: &'static str, units: u32) -> Result<(), AppError> {
        self.hub
            .throttles
            .user_actions(self.user, units)
            .inspect_err(|e| {
                metrics::counter!(m::WS_RATE_LIMITED, "kind" => kind).increment(1);
                let wait = e
                    .retry_after()
                    .unwrap_or(READ_PAUSE_MAX)
                    .min(READ_PAUSE_MAX);
                self.read_paused_until = Some(Instant::now() + wait);
            })
    }
}

pub(super) fn error_frame(e: &AppError, reference: Option<Ref>) -> ServerFrame {
    ServerFrame::error(e.code(), e.to_string(), reference).retry_after(e.retry_after())
}

/// An error about one chat of a frame that named several.
pub(super) fn chat_error(e: &AppError, reference: Option<Ref>, chat: ChatId) -> ServerFrame {
    error_frame(e, reference).about_chat(chat)
}
