//! Edits, deletes, reactions and replies: entries of the chat's log with seqs of their own, so
//! sockets, `sync` and `resume` carry them in order; history shows messages as they are now.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;
use xfchat::ids::ChatId;
use xfchat::protocol::{ClientFrame, EntryKind, Message, ServerFrame};

use crate::cluster::{cluster_with, reader};
use crate::common::{error_code, spawn_app, TestApp, User};
use crate::ws::{send, Ws};

async fn edit(app: &TestApp, user: &User, chat: i64, seq: i64, text: &str) -> (StatusCode, Value) {
    let path = format!("/api/chats/{chat}/messages/{seq}");
    app.call(
        Method::PATCH,
        &path,
        Some(&user.token),
        Some(json!({ "body": text })),
    )
    .await
}

async fn delete(app: &TestApp, user: &User, chat: i64, seq: i64) -> (StatusCode, Value) {
    let path = format!("/api/chats/{chat}/messages/{seq}");
    app.call(Method::DELETE, &path, Some(&user.token), None)
        .await
}

async fn react(
    app: &TestApp,
    method: Method,
    user: &User,
    chat: i64,
    seq: i64,
    emoji: &str,
) -> (StatusCode, Value) {
    let emoji = urlencoding(emoji);
    let path = format!("/api/chats/{chat}/messages/{seq}/reactions/{emoji}");
    app.call(method, &path, Some(&user.token), None).await
}

fn urlencoding(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

async fn history(app: &TestApp, user: &User, chat: i64) -> Vec<Value> {
    let (status, body) = app.get(&format!("/api/chats/{chat}/messages"), user).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["messages"].as_array().unwrap().clone()
}

/// The next message frame of `chat` on `ws`, skipping events.
async fn next_entry(ws: &mut Ws, chat: i64) -> Message {
    match ws
        .next_matching(
            |f| matches!(f, ServerFrame::Message { message } if message.chat_id == ChatId(chat)),
        )
        .await
    {
        ServerFrame::Message { message } => message,
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn an_edit_is_an_entry_with_its_own_seq_that_members_receive_and_history_shows_the_new_text()
{
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let first = app.say(&alice, chat, "helo").await;
    let mut b = app.ws(&bob).await;

    let (status, body) = edit(&app, &alice, chat, first, "hello").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["entry"]["kind"], "edit");
    assert_eq!(body["entry"]["target"], first);
    assert_eq!(body["entry"]["seq"], 2);
    let got = next_entry(&mut b, chat).await;
    assert_eq!(
        (got.kind, got.target, got.seq, got.body.as_str()),
        (EntryKind::Edit, Some(first), 2, "hello")
    );

    let page = history(&app, &bob, chat).await;
    assert_eq!(page.len(), 2, "the message and its edit: {page:?}");
    assert_eq!(page[0]["body"], "hello");
    assert_eq!(page[0]["kind"], "message");
    assert!(page[0]["edited_at"].is_string(), "{page:?}");
    assert_eq!(page[1]["kind"], "edit");

    // The same text again changes nothing and stores nothing.
    let (status, body) = edit(&app, &alice, chat, first, "hello").await;
    assert_eq!((status, &body["entry"]), (StatusCode::OK, &Value::Null));
    // Only the sender edits; an entry is not a message to edit; the text obeys the send rules.
    let (status, body) = edit(&app, &bob, chat, first, "mine now").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let (status, _) = edit(&app, &alice, chat, 2, "x").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = edit(&app, &alice, chat, first, "  ").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_input")
    );
    let (status, _) = edit(&app, &alice, chat, 99, "x").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(history(&app, &alice, chat).await.len(), 2);
}

#[tokio::test]
async fn a_delete_removes_the_text_and_its_edits_from_the_database_and_leaves_a_tombstone() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let carol = app.signup("carol").await;
    let chat = app.group(&alice, &[&bob, &carol]).await;
    let mine = app.say(&bob, chat, "first secret").await;
    edit(&app, &bob, chat, mine, "second secret").await;
    react(&app, Method::PUT, &carol, chat, mine, "👍").await;
    let mut c = app.ws(&carol).await;

    // Another member may not delete it; the sender may.
    let (status, body) = delete(&app, &carol, chat, mine).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let (status, body) = delete(&app, &bob, chat, mine).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["entry"]["kind"], "delete");
    let got = next_entry(&mut c, chat).await;
    assert_eq!((got.kind, got.target), (EntryKind::Delete, Some(mine)));

    let pool = app.db.pool().await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE body LIKE '%secret%'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "the text and its edit are gone from the database");
    let page = history(&app, &alice, chat).await;
    assert_eq!(page[0]["deleted"], true);
    assert_eq!(page[0]["body"], "");
    assert!(page[0].get("reactions").is_none(), "{page:?}");
    assert_eq!(page[1]["deleted"], true, "the edit's text went too");

    // Deleted once is deleted: no second entry, no edits or reactions after it.
    let (status, body) = delete(&app, &bob, chat, mine).await;
    assert_eq!((status, &body["entry"]), (StatusCode::OK, &Value::Null));
    assert_eq!(
        edit(&app, &bob, chat, mine, "back").await.0,
        StatusCode::NOT_FOUND
    );
    let (status, _) = react(&app, Method::PUT, &alice, chat, mine, "👍").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The group's creator may delete anyone's message.
    let theirs = app.say(&carol, chat, "rude").await;
    let (status, body) = delete(&app, &alice, chat, theirs).await;
    assert_eq!(
        (status, &body["entry"]["target"]),
        (StatusCode::OK, &json!(theirs))
    );
}

#[tokio::test]
async fn reactions_are_counted_per_emoji_with_whether_i_reacted_and_bounded_per_message() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let carol = app.signup("carol").await;
    let chat = app.group(&alice, &[&bob, &carol]).await;
    let seq = app.say(&alice, chat, "lunch?").await;
    let mut a = app.ws(&alice).await;

    let (status, body) = react(&app, Method::PUT, &bob, chat, seq, "👍").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (
            body["entry"]["kind"].as_str(),
            body["entry"]["body"].as_str()
        ),
        (Some("react"), Some("👍"))
    );
    let got = next_entry(&mut a, chat).await;
    assert_eq!(
        (got.kind, got.target, got.body.as_str()),
        (EntryKind::React, Some(seq), "👍")
    );
    react(&app, Method::PUT, &carol, chat, seq, "👍").await;
    react(&app, Method::PUT, &alice, chat, seq, "❤️").await;
    // Again: nothing new.
    let (status, body) = react(&app, Method::PUT, &bob, chat, seq, "👍").await;
    assert_eq!((status, &body["entry"]), (StatusCode::OK, &Value::Null));

    let page = history(&app, &bob, chat).await;
    assert_eq!(
        page[0]["reactions"],
        json!([{"emoji": "👍", "count": 2, "me": true}, {"emoji": "❤️", "count": 1, "me": false}])
    );

    let (status, body) = react(&app, Method::DELETE, &bob, chat, seq, "👍").await;
    assert_eq!(
        (status, body["entry"]["kind"].as_str()),
        (StatusCode::OK, Some("unreact"))
    );
    let (status, body) = react(&app, Method::DELETE, &bob, chat, seq, "👍").await;
    assert_eq!((status, &body["entry"]), (StatusCode::OK, &Value::Null));
    let page = history(&app, &bob, chat).await;
    assert_eq!(
        page[0]["reactions"][0],
        json!({"emoji": "👍", "count": 1, "me": false})
    );

    // A bounded number of different reactions per message; more of one is fine.
    for i in 2..xfchat::db::entries::MAX_REACTIONS {
        let (status, body) = react(&app, Method::PUT, &carol, chat, seq, &format!("e{i}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = react(&app, Method::PUT, &bob, chat, seq, "🎉").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "too_many_reactions")
    );
    let (status, _) = react(&app, Method::PUT, &bob, chat, seq, "❤️").await;
    assert_eq!(status, StatusCode::OK);
    for bad in ["a b", "\u{1}", &"x".repeat(65)] {
        let (status, body) = react(&app, Method::PUT, &bob, chat, seq, bad).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_input"),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn an_edit_and_a_delete_made_while_a_member_was_offline_reach_them_by_resume_in_order() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let one = app.say(&alice, chat, "one").await;
    let two = app.say(&alice, chat, "two").await;
    // Bob has both and goes away.
    edit(&app, &alice, chat, one, "one, edited").await;
    delete(&app, &alice, chat, two).await;
    react(&app, Method::PUT, &alice, chat, one, "👀").await;
    app.say(&alice, chat, "three").await;

    let mut b = app.ws(&bob).await;
    b.send(&ClientFrame::Resume {
        positions: [(ChatId(chat), two)].into(),
        epoch: None,
        reference: None,
    })
    .await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let m = next_entry(&mut b, chat).await;
        got.push((m.seq, m.kind, m.target, m.body));
    }
    assert_eq!(
        got,
        vec![
            (3, EntryKind::Edit, Some(one), "one, edited".to_owned()),
            (4, EntryKind::Delete, Some(two), String::new()),
            (5, EntryKind::React, Some(one), "👀".to_owned()),
            (6, EntryKind::Message, None, "three".to_owned()),
        ]
    );
}

#[tokio::test]
async fn a_reply_carries_the_seq_it_answers_which_must_be_a_message_of_the_same_chat() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let asked = app.say(&alice, chat, "tea?").await;
    let path = |id: Uuid| format!("/api/chats/{chat}/messages/{id}");

    let (status, body) = app
        .put(
            &path(Uuid::new_v4()),
            &bob,
            json!({"body": "yes", "reply_to": asked}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["message"]["reply_to"], asked);
    edit(&app, &alice, chat, asked, "tea? now?").await;
    for bad in [99, 3, 0] {
        let (status, body) = app
            .put(
                &path(Uuid::new_v4()),
                &bob,
                json!({"body": "?", "reply_to": bad}),
            )
            .await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_input"),
            "reply_to {bad}: {body}"
        );
    }
    let other = app.group(&alice, &[]).await;
    let elsewhere = app.say(&alice, other, "elsewhere").await;
    assert_eq!(elsewhere, 1);
    let (status, _) = app
        .put(
            &format!("/api/chats/{other}/messages/{}", Uuid::new_v4()),
            &alice,
            json!({"body": "?", "reply_to": 2}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "seq 2 of another chat is not a message of this one"
    );

    // On a socket: the ack carries it back, and a bad one is an error frame naming the send.
    let mut a = app.ws(&alice).await;
    let (id, mut frame) = send(chat, "now");
    if let ClientFrame::Send { reply_to, .. } = &mut frame {
        *reply_to = Some(2);
    }
    a.send(&frame).await;
    match a
        .next_matching(|f| matches!(f, ServerFrame::Ack { .. }))
        .await
    {
        ServerFrame::Ack {
            message,
            client_msg_id,
        } => {
            assert_eq!((client_msg_id, message.reply_to), (id, Some(2)));
        }
        _ => unreachable!(),
    }
    let (_, mut frame) = send(chat, "later");
    if let ClientFrame::Send { reply_to, .. } = &mut frame {
        *reply_to = Some(1000);
    }
    a.send(&frame).await;
    match a
        .next_matching(|f| matches!(f, ServerFrame::Error { .. }))
        .await
    {
        ServerFrame::Error { code, .. } => assert_eq!(code, "invalid_input"),
        _ => unreachable!(),
    }
    // Nothing stored for the refused ones: seqs 1..=5 are the question, its answer, the edit,
    // and the socket's reply.
    assert_eq!(history(&app, &alice, chat).await.len(), 4);
}

#[tokio::test]
async fn edits_and_reactions_are_not_unread_and_the_chat_list_previews_and_sorts_by_activity() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let carol = app.signup("carol").await;
    let older = app.group(&alice, &[&bob]).await;
    app.befriend(&alice, &carol).await;
    let (status, body) = app
        .post(
            "/api/chats",
            &alice,
            json!({"title": "newer", "member_ids": [bob.id, carol.id]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let newer = body["chat"]["id"].as_i64().unwrap();
    let first = app.say(&alice, older, "first").await;
    app.say(&alice, newer, "second").await;
    // The older chat's seqs run further (two edits), though its last message is older.
    edit(&app, &alice, older, first, "first, edit").await;
    edit(&app, &alice, older, first, "first, edited").await;
    react(&app, Method::PUT, &carol, newer, 1, "👍").await;

    let (_, body) = app.get("/api/chats", &bob).await;
    let chats = body["chats"].as_array().unwrap();
    let ids: Vec<i64> = chats.iter().map(|c| c["id"].as_i64().unwrap()).collect();
    assert_eq!(
        ids,
        vec![newer, older],
        "newest message first; an edit is no activity"
    );
    assert_eq!(
        chats[0]["unread"], 1,
        "one message; the reaction does not count"
    );
    assert_eq!(
        chats[1]["unread"], 1,
        "one message; the edit does not count"
    );
    assert_eq!(chats[1]["last_message"]["body"], "first, edited");
    assert_eq!(chats[1]["last_message"]["seq"], first);
    assert_eq!(
        chats[1]["last_activity_at"],
        chats[1]["last_message"]["created_at"]
    );

    // A message in the older chat brings it to the top.
    app.say(&bob, older, "bump").await;
    let (_, body) = app.get("/api/chats", &alice).await;
    assert_eq!(body["chats"][0]["id"], older);
    assert_eq!(body["chats"][0]["last_message"]["body"], "bump");
    assert_eq!(
        body["chats"][0]["unread"], 1,
        "alice's own messages are not unread"
    );
    let (_, body) = app.get(&format!("/api/chats/{newer}"), &carol).await;
    assert_eq!(body["chat"]["unread"], 1);
    // A chat without messages: no preview, active since it was made.
    let empty = app.group(&carol, &[]).await;
    let (_, body) = app.get(&format!("/api/chats/{empty}"), &carol).await;
    assert_eq!(body["chat"]["last_message"], Value::Null);
    assert_eq!(body["chat"]["last_activity_at"], body["chat"]["created_at"]);
}

#[tokio::test]
async fn an_outsider_can_neither_edit_delete_nor_react_and_learns_nothing() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let mallory = app.signup("mallory").await;
    let chat = app.group(&alice, &[&bob]).await;
    let seq = app.say(&alice, chat, "private").await;
    for (status, body) in [
        edit(&app, &mallory, chat, seq, "pwned").await,
        delete(&app, &mallory, chat, seq).await,
        react(&app, Method::PUT, &mallory, chat, seq, "💩").await,
        react(&app, Method::DELETE, &mallory, chat, seq, "💩").await,
        edit(&app, &mallory, 99_999, 1, "x").await,
    ] {
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::NOT_FOUND, "not_found")
        );
    }
    let page = history(&app, &alice, chat).await;
    assert_eq!(page.len(), 1);
    assert_eq!(page[0]["body"], "private");
}

#[tokio::test]
async fn in_a_closed_direct_chat_no_one_edits_or_reacts_but_each_may_still_delete_their_own() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    app.befriend(&alice, &bob).await;
    let chat = app.direct(&alice, &bob).await;
    let seq = app.say(&alice, chat, "hi").await;
    let (status, _) = app
        .post(&format!("/api/users/{}/block", alice.id), &bob, json!({}))
        .await;
    assert!(status.is_success());
    let (status, _) = edit(&app, &alice, chat, seq, "hey").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = react(&app, Method::PUT, &bob, chat, seq, "👎").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = delete(&app, &alice, chat, seq).await;
    assert_eq!(
        (status, &body["entry"]["kind"]),
        (StatusCode::OK, &json!("delete"))
    );
}

#[tokio::test]
async fn an_entry_made_on_one_node_reaches_a_member_on_another_in_order() {
    let c = cluster_with(2, &[]).await;
    let app = &c.app;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let seq = app.say(&alice, chat, "hello").await;
    let mut b = reader(&c, 1, &bob, chat, seq).await;
    // Node 0 serves the HTTP calls; bob listens on node 1.
    edit(app, &alice, chat, seq, "hello, all").await;
    react(app, Method::PUT, &alice, chat, seq, "👋").await;
    let e = next_entry(&mut b, chat).await;
    assert_eq!(
        (e.seq, e.kind, e.body.as_str()),
        (2, EntryKind::Edit, "hello, all")
    );
    let r = next_entry(&mut b, chat).await;
    assert_eq!((r.seq, r.kind, r.target), (3, EntryKind::React, Some(seq)));
}

#[tokio::test]
async fn on_a_socket_edits_deletes_and_reactions_reach_every_member_and_errors_name_the_ref() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    let seq = app.say(&alice, chat, "hello").await;
    let mut a = app.ws(&alice).await;
    let mut b = app.ws(&bob).await;
    let reference = |n: i64| Some(xfchat::protocol::Ref::Number(n));

    b.send(&ClientFrame::React {
        chat_id: ChatId(chat),
        seq,
        emoji: "👋".into(),
        reference: reference(1),
    })
    .await;
    for ws in [&mut a, &mut b] {
        let got = next_entry(ws, chat).await;
        assert_eq!(
            (got.kind, got.target, got.body.as_str()),
            (EntryKind::React, Some(seq), "👋")
        );
    }
    a.send(&ClientFrame::Edit {
        chat_id: ChatId(chat),
        seq,
        body: "hello, bob".into(),
        reference: reference(2),
    })
    .await;
    assert_eq!(next_entry(&mut b, chat).await.kind, EntryKind::Edit);
    // Bob may not edit or delete alice's message: an error frame with the frame's ref.
    for frame in [
        ClientFrame::Edit {
            chat_id: ChatId(chat),
            seq,
            body: "mine".into(),
            reference: reference(3),
        },
        ClientFrame::Delete {
            chat_id: ChatId(chat),
            seq,
            reference: reference(4),
        },
        ClientFrame::React {
            chat_id: ChatId(chat),
            seq,
            emoji: "a b".into(),
            reference: reference(5),
        },
    ] {
        let expected = frame.reference().cloned();
        b.send(&frame).await;
        match b
            .next_matching(|f| matches!(f, ServerFrame::Error { .. }))
            .await
        {
            ServerFrame::Error {
                code, reference, ..
            } => {
                assert!(code == "forbidden" || code == "invalid_input", "{code:?}");
                assert_eq!(reference, expected);
            }
            _ => unreachable!(),
        }
    }
    a.send(&ClientFrame::Delete {
        chat_id: ChatId(chat),
        seq,
        reference: reference(6),
    })
    .await;
    let gone = next_entry(&mut b, chat).await;
    assert_eq!((gone.kind, gone.seq), (EntryKind::Delete, 4));
    assert_eq!(history(&app, &bob, chat).await[0]["deleted"], true);
}
