//! The history's epoch: a restore (or a promotion that lost the tail) rewinds seqs, and a client
//! whose positions lie past what the restored history holds is set back instead of silently
//! dropping the new messages that take those seqs again.

use std::process::Command;

use uuid::Uuid;
use xfchat::ids::ChatId;
use xfchat::protocol::{ClientFrame, ServerFrame};

use crate::common::{run, spawn_app, spawn_app_on, TestApp, TestDb, User};
use crate::ws::{send, Ws};

async fn send_n(app: &TestApp, user: &User, chat: i64, n: usize) {
    for i in 0..n {
        let (status, _) = app.send(user, chat, Uuid::new_v4(), &format!("m{i}")).await;
        assert!(status.is_success());
    }
}

async fn resume(ws: &mut Ws, chat: i64, at: i64, epoch: Option<Uuid>) {
    ws.send(&ClientFrame::Resume {
        positions: [(ChatId(chat), at)].into(),
        epoch,
        reference: None,
    })
    .await;
}

#[tokio::test]
async fn a_restore_from_a_dump_starts_a_new_epoch_and_sets_a_client_ahead_back_to_what_both_histories_share(
) {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    send_n(&app, &alice, chat, 5).await;
    let old_epoch = app.ws(&bob).await.epoch;
    let dump = std::env::temp_dir().join(format!("xfchat-{}.dump", Uuid::new_v4()));
    let dump = dump.to_str().unwrap().to_owned();
    run(
        "pg_dump",
        &["--format=custom", "--file", &dump, &app.db.url],
    );
    send_n(&app, &alice, chat, 5).await;

    // The runbook's restore: a new database from the dump, and the servers pointed at it.
    let restored = TestDb::create().await;
    run(
        "pg_restore",
        &["--no-owner", "--dbname", &restored.url, &dump],
    );
    std::fs::remove_file(&dump).ok();
    let app2 = spawn_app_on(restored).await;
    let mut b = app2.ws(&bob).await;
    assert_ne!(
        b.epoch, old_epoch,
        "a restored history has an epoch of its own"
    );

    // Bob had 10 of the old history; the restored one shares 5.
    resume(&mut b, chat, 10, Some(old_epoch)).await;
    match b.next().await {
        ServerFrame::Rewound {
            chat_id,
            seq,
            epoch,
        } => assert_eq!((chat_id, seq, epoch), (ChatId(chat), 5, b.epoch)),
        other => panic!("expected rewound, got {other:?}"),
    }
    assert!(matches!(
        b.next().await,
        ServerFrame::Synced { last_seq: 5, .. }
    ));
    // New messages take seqs 6..8 again, and reach him.
    let mut a = app2.ws(&alice).await;
    for i in 0..3 {
        a.send(&send(chat, &format!("after the restore {i}")).1)
            .await;
    }
    let mut seqs = Vec::new();
    while seqs.len() < 3 {
        if let ServerFrame::Message { message } = b.next().await {
            seqs.push(message.seq);
        }
    }
    assert_eq!(seqs, [6, 7, 8]);
}

#[tokio::test]
async fn the_epoch_stays_the_same_across_servers_and_restarts_on_one_database() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let first = app.ws(&alice).await.epoch;
    assert!(!first.is_nil());
    let again = crate::sessions::second_server(&app).await;
    assert_eq!(again.ws(&alice).await.epoch, first);
}

#[tokio::test]
async fn a_position_beyond_a_chat_s_end_is_set_back_to_its_end() {
    let app = spawn_app().await;
    let (alice, bob) = (app.signup("alice").await, app.signup("bob").await);
    let chat = app.group(&alice, &[&bob]).await;
    send_n(&app, &alice, chat, 3).await;
    let mut b = app.ws(&bob).await;
    let epoch = b.epoch;
    resume(&mut b, chat, 9, Some(epoch)).await;
    match b.next().await {
        ServerFrame::Rewound { seq, .. } => assert_eq!(seq, 3),
        other => panic!("expected rewound, got {other:?}"),
    }
    assert!(matches!(
        b.next().await,
        ServerFrame::Synced { last_seq: 3, .. }
    ));
    // A position within the chat, of this epoch, is taken as it is.
    resume(&mut b, chat, 2, Some(epoch)).await;
    assert!(matches!(b.next().await, ServerFrame::Message { .. }));
}

#[tokio::test]
async fn renewing_the_epoch_closes_every_socket_with_4005_and_they_come_back_to_the_new_one() {
    let app = spawn_app().await;
    let alice = app.signup("alice").await;
    let mut ws = app.ws(&alice).await;
    let before = ws.epoch;
    let out = Command::new(env!("CARGO_BIN_EXE_xfchat"))
        .args(["epoch", "--renew"])
        .env("DATABASE_URL", &app.db.url)
        .env("JWT_SECRET", crate::common::SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let renewed: Uuid = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(renewed, before);
    let (close, _) = ws.until_closed(std::time::Duration::from_secs(15)).await;
    assert_eq!(close.map(|c| u16::from(c.code)), Some(4005));
    assert_eq!(app.ws(&alice).await.epoch, renewed);
}
