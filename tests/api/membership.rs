//! Membership changes take effect on open sockets at once, and blocks keep a user out.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;
use xfchat::ids::ChatId;
use xfchat::protocol::{ClientFrame, ServerFrame};

use crate::common::{error_code, spawn_app};
use crate::ws::{read_seqs, send, sync, Ws};

/// The next frame that is not a `chat`, `members` or `read` event.
async fn next_non_event(ws: &mut Ws) -> ServerFrame {
    loop {
        match ws.next().await {
            ServerFrame::Chat { .. } | ServerFrame::Members { .. } | ServerFrame::Read { .. } => {
                continue
            }
            other => return other,
        }
    }
}

#[tokio::test]
async fn a_removed_member_receives_nothing_after_the_removal_and_can_no_longer_use_the_chat() {
    let app = spawn_app().await;
    let (alice, bob, carol) = (
        app.signup("alice").await,
        app.signup("bob").await,
        app.signup("carol").await,
    );
    let chat = app.group(&alice, &[&bob, &carol]).await;
    let mut a = app.ws(&alice).await;
    let mut b = app.ws(&bob).await;
    let mut c = app.ws(&carol).await;
    // Alice sends a stream while she removes Bob: what Bob got must be a prefix of the chat, and
    // nothing after the removal.
    let frames: Vec<_> = (0..200).map(|i| send(chat, &format!("m{i}"))).collect();
    for (i, (_, f)) in frames.iter().enumerate() {
        a.send(f).await;
        if i == 100 {
            let (status, body) = app
                .call(
                    Method::DELETE,
                    &format!("/api/chats/{chat}/members/{}", bob.id),
                    Some(&alice.token),
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        }
    }
    let carol_seqs = read_seqs(&mut c, 200).await;
    assert_eq!(carol_seqs, (1..=200).collect::<Vec<_>>());
    // Bob hears chat_removed; a message committed before the removal may still be fanned out
    // around it, but whatever he got is the chat's beginning, without a gap.
    let mut bob_seqs = Vec::new();
    let mut removed = false;
    while let Ok(frame) = tokio::time::timeout(Duration::from_millis(500), b.next()).await {
        match frame {
            ServerFrame::Message { message } => bob_seqs.push(message.seq),
            ServerFrame::ChatRemoved { chat_id } => removed = chat_id == ChatId(chat),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(removed, "Bob is told he was removed");
    assert_eq!(bob_seqs, (1..=bob_seqs.len() as i64).collect::<Vec<_>>());
    let (_, frame) = send(chat, "after");
    a.send(&frame).await;
    b.expect_silence(Duration::from_millis(300)).await;
    for frame in [
        sync(chat, 0),
        ClientFrame::Typing {
            chat_id: ChatId(chat),
            reference: None,
        },
        send(chat, "let me in").1,
    ] {
        b.send(&frame).await;
        match b.next().await {
            ServerFrame::Error { code, .. } => assert_eq!(code, "not_found", "{frame:?}"),
            other => panic!("expected not_found for {frame:?}, got {other:?}"),
        }
    }
    let (status, _) = app.get(&format!("/api/chats/{chat}/messages"), &bob).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn adding_and_leaving_give_newcomers_the_chat_and_the_members_only_the_change() {
    let app = spawn_app().await;
    let (alice, bob, dave) = (
        app.signup("alice").await,
        app.signup("bob").await,
        app.signup("dave").await,
    );
    let chat = app.group(&alice, &[&bob]).await;
    app.befriend(&alice, &dave).await;
    let mut a = app.ws(&alice).await;
    let mut b = app.ws(&bob).await;
    let mut d = app.ws(&dave).await;
    let (status, body) = app
        .post(
            &format!("/api/chats/{chat}/members"),
            &alice,
            json!({ "user_ids": [dave.id] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    match d.next().await {
        ServerFrame::Chat { chat: view } => {
            assert_eq!(view.members.len(), 3);
            assert_eq!((view.last_read_seq, view.unread), (0, view.last_seq));
        }
        other => panic!("expected the chat event, got {other:?}"),
    }
    for ws in [&mut a, &mut b] {
        match ws.next().await {
            ServerFrame::Members {
                chat_id,
                added,
                removed,
            } => {
                assert_eq!(chat_id, ChatId(chat));
                let added: Vec<i64> = added.iter().map(|m| m.id.0).collect();
                assert_eq!(added, [dave.id]);
                assert!(removed.is_empty());
            }
            other => panic!("expected the members event, got {other:?}"),
        }
    }
    let (status, _) = app
        .post(&format!("/api/chats/{chat}/leave"), &bob, json!({}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(matches!(b.next().await, ServerFrame::ChatRemoved { .. }));
    for ws in [&mut a, &mut d] {
        match ws.next().await {
            ServerFrame::Members { added, removed, .. } => {
                assert!(added.is_empty());
                assert_eq!(removed, [xfchat::ids::UserId(bob.id)]);
            }
            other => panic!("expected the members event, got {other:?}"),
        }
    }
    app.send(&alice, chat, Uuid::new_v4(), "welcome").await;
    assert!(matches!(
        next_non_event(&mut d).await,
        ServerFrame::Message { .. }
    ));
    b.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn only_the_creator_removes_members_and_only_friends_are_added() {
    let app = spawn_app().await;
    let (alice, bob, carol, eve) = (
        app.signup("alice").await,
        app.signup("bob").await,
        app.signup("carol").await,
        app.signup("eve").await,
    );
    let chat = app.group(&alice, &[&bob, &carol]).await;
    let (status, body) = app
        .call(
            Method::DELETE,
            &format!("/api/chats/{chat}/members/{}", carol.id),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let (status, body) = app
        .post(
            &format!("/api/chats/{chat}/members"),
            &alice,
            json!({ "user_ids": [eve.id] }),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let (status, body) = app
        .post(
            &format!("/api/chats/{chat}/members"),
            &eve,
            json!({ "user_ids": [alice.id] }),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
}

#[tokio::test]
async fn a_block_stops_friend_requests_direct_chats_and_direct_messages_from_that_user() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    app.befriend(&alice, &bob).await;
    let (_, body) = app
        .put(&format!("/api/chats/direct/{}", bob.id), &alice, json!({}))
        .await;
    let direct = body["chat"]["id"].as_i64().unwrap();
    let (status, _) = app
        .post(&format!("/api/users/{}/block", alice.id), &bob, json!({}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app
        .post(
            "/api/friends/requests",
            &alice,
            json!({ "username": "bob" }),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let (status, _) = app
        .put(&format!("/api/chats/direct/{}", bob.id), &alice, json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = app.send(&alice, direct, Uuid::new_v4(), "hello?").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/users/{}/block", alice.id),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app
        .send(&alice, direct, Uuid::new_v4(), "hello again")
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the block ended the friendship, and a direct chat needs one"
    );
    app.befriend(&bob, &alice).await;
    let (status, _) = app
        .send(&alice, direct, Uuid::new_v4(), "hello again")
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "friends again after the unblock, the direct chat works again"
    );
}

#[tokio::test]
async fn a_blocked_user_s_typing_and_read_markers_no_longer_reach_the_blocker_but_group_messages_do(
) {
    let app = spawn_app().await;
    let (alice, mallory, carol) = (
        app.signup("alice").await,
        app.signup("mallory").await,
        app.signup("carol").await,
    );
    app.befriend(&alice, &mallory).await;
    app.befriend(&alice, &carol).await;
    let (_, body) = app
        .put(
            &format!("/api/chats/direct/{}", mallory.id),
            &alice,
            json!({}),
        )
        .await;
    let direct = body["chat"]["id"].as_i64().unwrap();
    let group = {
        let (status, body) = app
            .post(
                "/api/chats",
                &alice,
                json!({ "title": "g", "member_ids": [mallory.id, carol.id] }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["chat"]["id"].as_i64().unwrap()
    };
    let (status, _) = app.send(&alice, direct, Uuid::new_v4(), "hi").await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = app.send(&alice, group, Uuid::new_v4(), "hi all").await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = app
        .post(
            &format!("/api/users/{}/block", mallory.id),
            &alice,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let mut a = app.ws(&alice).await;
    let mut c = app.ws(&carol).await;
    let mut m = app.ws(&mallory).await;
    for chat in [direct, group] {
        m.send(&ClientFrame::Typing {
            chat_id: ChatId(chat),
            reference: None,
        })
        .await;
        m.send(&ClientFrame::Read {
            chat_id: ChatId(chat),
            seq: 1,
            reference: None,
        })
        .await;
    }
    // Carol, who blocked nobody, hears Mallory in the group; Alice hears nothing of her.
    let mut heard = Vec::new();
    while heard.len() < 2 {
        if let frame @ (ServerFrame::Typing { .. } | ServerFrame::Read { .. }) = c.next().await {
            heard.push(frame);
        }
    }
    assert!(heard.iter().all(|f| matches!(f,
        ServerFrame::Typing { user_id, .. } | ServerFrame::Read { user_id, .. }
            if *user_id == xfchat::ids::UserId(mallory.id))));
    a.expect_silence(Duration::from_millis(500)).await;
    // Group messages are not filtered: a block is about the two of them, and the group is the
    // others' conversation too.
    let (_, frame) = send(group, "still here");
    m.send(&frame).await;
    match next_non_event(&mut a).await {
        ServerFrame::Message { message } => assert_eq!(message.body, "still here"),
        other => panic!("expected Mallory's group message, got {other:?}"),
    }
}
