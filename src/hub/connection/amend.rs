//! Edits, deletes and reactions made on a socket: the same entries as over HTTP (see
//! `db::entries`). Nothing answers one that succeeds but the entry itself, which reaches every
//! socket of every member (this one too) like a message; an error names the frame's `ref`.

use super::frames::error_frame;
use super::Connection;
use crate::db::entries::Amend;
use crate::error::AppResult;
use crate::ids::ChatId;
use crate::protocol::{EntryKind, Ref, ServerFrame};

impl Connection {
    /// Runs one amend frame, boxed like the other frames that wait on the database.
    pub(super) async fn amend(
        &mut self,
        chat: ChatId,
        target: i64,
        kind: EntryKind,
        body: String,
        reference: Option<Ref>,
    ) -> Option<ServerFrame> {
        Box::pin(self.on_amend(chat, target, kind, body))
            .await
            .err()
            .map(|e| error_frame(&e, reference))
    }

    async fn on_amend(
        &mut self,
        chat: ChatId,
        target: i64,
        kind: EntryKind,
        body: String,
    ) -> AppResult<()> {
        self.budget("amend", 1)?;
        let amend = Amend {
            chat,
            actor: self.user,
            kind,
            target,
            body,
        };
        self.hub.amend(amend).await.map(|_| ())
    }
}
