//! One writer per chat across nodes: a socket's send to a chat that another node owns is
//! stored by that node and answered on the sender's; when the owner does not answer, the
//! sender's node stores it, once.

use std::time::Duration;

use uuid::Uuid;
use xfchat::ids::ChatId;
use xfchat::protocol::{ClientFrame, ServerFrame};

use crate::cluster::{cluster_with, reader, send_many_in_order, stored_order, Cluster};
use crate::common::{metric, metrics_text};

/// Waits until every node of `c` hears all of them on the bus.
async fn until_all_heard(c: &Cluster) {
    let n = c.bases.len() as f64;
    for _ in 0..100 {
        let mut all = true;
        for base in &c.bases {
            all &= metric(&metrics_text(base).await, "xfchat_bus_nodes") == Some(n);
        }
        if all {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the nodes never heard each other");
}

async fn counter(base: &str, series: &str) -> f64 {
    metric(&metrics_text(base).await, series).unwrap_or(0.0)
}

const PERSISTED: &str = "xfchat_messages_persisted_total";
const ANSWERED: &str = "xfchat_sends_forwarded_total{result=\"answered\"}";
const TIMED_OUT: &str = "xfchat_sends_forwarded_total{result=\"timed_out\"}";

#[tokio::test]
async fn sends_on_two_nodes_into_one_chat_are_stored_by_its_owner_alone_and_acked_on_the_senders_nodes(
) {
    let c = cluster_with(2, &[]).await;
    until_all_heard(&c).await;
    let alice = c.app.signup("alice").await;
    let bob = c.app.signup("bob").await;
    let chat = c.app.group(&alice, &[&bob]).await;
    let mut at0 = reader(&c, 0, &alice, chat, 0).await;
    let mut at1 = reader(&c, 1, &bob, chat, 0).await;
    let (a, b) = futures_util::future::join(
        send_many_in_order(&mut at0, chat, 100),
        send_many_in_order(&mut at1, chat, 100),
    )
    .await;
    assert!(a >= 100 && b >= 100);
    assert_eq!(
        stored_order(&c.app, chat).await.len(),
        200,
        "each send once"
    );
    let persisted = [
        counter(&c.bases[0], PERSISTED).await,
        counter(&c.bases[1], PERSISTED).await,
    ];
    let answered = [
        counter(&c.bases[0], ANSWERED).await,
        counter(&c.bases[1], ANSWERED).await,
    ];
    // The group's creation stores nothing; every message is one node's commit.
    let owner = if persisted[0] > 0.0 { 0 } else { 1 };
    assert_eq!(
        persisted,
        if owner == 0 {
            [200.0, 0.0]
        } else {
            [0.0, 200.0]
        },
        "one node stores the chat's messages"
    );
    assert_eq!(
        answered[1 - owner],
        100.0,
        "the other node's sends were forwarded and answered"
    );
    assert_eq!(answered[owner], 0.0);
}

#[tokio::test]
async fn a_send_whose_owner_died_is_stored_by_the_sender_s_node_once_within_seconds() {
    let mut c = cluster_with(2, &[]).await;
    until_all_heard(&c).await;
    let alice = c.app.signup("alice").await;
    let bob = c.app.signup("bob").await;
    let chat = c.app.group(&alice, &[&bob]).await;
    // Which node owns the chat: a send on node 0 is forwarded exactly when node 1 does.
    let mut ws = reader(&c, 0, &alice, chat, 0).await;
    assert_eq!(send_many_in_order(&mut ws, chat, 1).await, 1);
    let owner = if counter(&c.bases[0], ANSWERED).await == 1.0 {
        1
    } else {
        0
    };
    let sender = 1 - owner;
    let mut ws = reader(&c, sender, &alice, chat, 1).await;

    c.nodes[owner] = None;
    let id = Uuid::new_v4();
    let sent = tokio::time::Instant::now();
    ws.send(&ClientFrame::Send {
        chat_id: ChatId(chat),
        client_msg_id: id,
        body: "after the owner died".into(),
    })
    .await;
    let acked = ws
        .next_matching(|f| matches!(f, ServerFrame::Ack { .. } | ServerFrame::Error { .. }))
        .await;
    let ServerFrame::Ack { message, .. } = acked else {
        panic!("an ack, not {acked:?}");
    };
    assert_eq!((message.client_msg_id, message.seq), (id, 2));
    let waited = sent.elapsed();
    assert!(waited < Duration::from_secs(5), "acked after {waited:?}");
    assert_eq!(counter(&c.bases[sender], TIMED_OUT).await, 1.0);
    assert_eq!(stored_order(&c.app, chat).await.len(), 2, "stored once");
}
