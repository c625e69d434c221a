//! Several server processes on one fresh database, each on its own port with the same secret:
//! what is committed on one node reaches sockets on the others once, in seq order, through
//! `LISTEN/NOTIFY` and the database; nothing is lost when the bus is. (The NATS bus: `nats.rs`.)

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use uuid::Uuid;
use xfchat::ids::ChatId;
use xfchat::protocol::{close, ClientFrame, Codec, ServerFrame};

use crate::common::{metric, metrics_text, TestApp, TestDb, User, SECRET};
use crate::startup::{free_listen_address, serve_binary_logging_to, Process};
use crate::ws::Ws;

/// Nodes on one database; `app` talks HTTP to the first.
pub struct Cluster {
    pub app: TestApp,
    pub nodes: Vec<Option<Process>>,
    pub bases: Vec<String>,
    url: String,
    /// Settings every node gets on top of the tests' own.
    extra: Vec<(String, String)>,
}

async fn cluster(n: usize) -> Cluster {
    cluster_with(n, &[]).await
}

/// `n` nodes with `extra` settings on top of the tests' own.
pub async fn cluster_with(n: usize, extra: &[(&str, &str)]) -> Cluster {
    cluster_on(TestDb::create().await, n, extra).await
}

/// `n` nodes on `db` with `extra` settings, which win over the tests' own.
pub async fn cluster_on(db: TestDb, n: usize, extra: &[(&str, &str)]) -> Cluster {
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let url = db.url.clone();
    let mut c = Cluster {
        app: TestApp::at("", db),
        nodes: Vec::new(),
        bases: Vec::new(),
        url,
        extra,
    };
    for _ in 0..n {
        c.add_node().await;
    }
    c.app.base = c.bases[0].clone();
    c
}

impl Cluster {
    /// Starts one more node on the cluster's database; returns its index.
    pub async fn add_node(&mut self) -> usize {
        let node = format!("node{}", self.nodes.len());
        let mut env = vec![
            ("JWT_SECRET", SECRET),
            ("DATABASE_URL", self.url.as_str()),
            ("XFCHAT_USER_RATE", "0"),
            ("XFCHAT_SIGNUP_RATE_PER_MIN", "0"),
            ("XFCHAT_SOCIAL_RATE_PER_MIN", "0"),
            ("XFCHAT_NODE_ID", node.as_str()),
            // Tests share one PostgreSQL (100 connections) and run side by side.
            ("XFCHAT_DB_MAX_CONNECTIONS", "4"),
        ];
        env.extend(self.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let (child, base) =
            serve_binary_logging_to(&free_listen_address(), &env, Stdio::null()).await;
        self.nodes.push(Some(Process(child)));
        self.bases.push(base);
        self.nodes.len() - 1
    }
}

impl Cluster {
    pub async fn ws(&self, node: usize, user: &User) -> Ws {
        Ws::connect(&self.bases[node], user, Codec::Json).await
    }
}

/// Opens a socket and starts it at `after` in `chat`.
pub async fn reader(c: &Cluster, node: usize, user: &User, chat: i64, after: i64) -> Ws {
    let mut ws = c.ws(node, user).await;
    ws.send(&ClientFrame::Resume {
        epoch: None,
        positions: [(ChatId(chat), after)].into(),
        reference: None,
    })
    .await;
    loop {
        match ws.next().await {
            ServerFrame::Synced { last_seq, .. } => {
                assert_eq!(last_seq, after);
                return ws;
            }
            // The `chat` event of the new chat may come from the other node meanwhile.
            ServerFrame::Chat { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Reads the chat's messages after `after` up to `last`, asserting the raw frame order: each
/// the cursor's next, none twice. Returns the client_msg_ids in the order read.
pub async fn read_in_order(ws: &mut Ws, chat: i64, after: i64, last: i64) -> Vec<Uuid> {
    let mut seq = after;
    let mut ids = Vec::new();
    while seq < last {
        match ws.next().await {
            ServerFrame::Message { message } if message.chat_id == ChatId(chat) => {
                assert_eq!(message.seq, seq + 1, "gap or repeat in the raw stream");
                seq = message.seq;
                ids.push(message.client_msg_id);
            }
            ServerFrame::Ack { message, .. } if message.chat_id == ChatId(chat) => {
                assert_eq!(message.seq, seq + 1, "gap or repeat in the raw stream");
                seq = message.seq;
                ids.push(message.client_msg_id);
            }
            _ => {}
        }
    }
    ids
}

/// Sends `n` messages on `ws` without waiting for answers; returns their client_msg_ids.
pub async fn send_all(ws: &mut Ws, chat: i64, n: usize) -> HashSet<Uuid> {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        ws.send(&ClientFrame::Send {
            chat_id: ChatId(chat),
            client_msg_id: *id,
            body: format!("m {id}"),
            reply_to: None,
            attachments: Vec::new(),
        })
        .await;
    }
    ids.into_iter().collect()
}

/// Sends `n` messages on `ws` without waiting, then waits for every ack.
pub async fn send_many(ws: &mut Ws, chat: i64, n: usize) -> HashSet<Uuid> {
    let ids = send_all(ws, chat, n).await;
    let mut acked = HashSet::new();
    while acked.len() < n {
        if let ServerFrame::Ack { client_msg_id, .. } = ws.next().await {
            acked.insert(client_msg_id);
        }
    }
    ids
}

/// Like [`send_many`], on a socket that started at 0 in `chat`, asserting its raw order: the
/// other nodes' messages and this socket's acks interleave in seq order, each once. Returns
/// the last seq read.
pub async fn send_many_in_order(ws: &mut Ws, chat: i64, n: usize) -> i64 {
    let mut pending = send_all(ws, chat, n).await;
    let mut seq = 0;
    while !pending.is_empty() {
        let message = match ws.next().await {
            ServerFrame::Ack { message, .. } => {
                assert!(pending.remove(&message.client_msg_id), "acked once");
                message
            }
            ServerFrame::Message { message } => message,
            _ => continue,
        };
        assert_eq!(
            message.seq,
            seq + 1,
            "gap or repeat in the sender's raw stream"
        );
        seq = message.seq;
    }
    seq
}

pub async fn stored_order(app: &TestApp, chat: i64) -> Vec<Uuid> {
    let pool = app.db.pool().await;
    sqlx::query_scalar("SELECT client_msg_id FROM messages WHERE conversation_id = $1 ORDER BY seq")
        .bind(chat)
        .fetch_all(&pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_message_sent_on_one_node_reaches_members_on_every_node_once_and_in_seq_order() {
    let c = cluster(3).await;
    let sender = c.app.signup("sender").await;
    let others = [
        c.app.signup("reader0").await,
        c.app.signup("reader1").await,
        c.app.signup("reader2").await,
    ];
    let chat = c
        .app
        .group(&sender, &others.iter().collect::<Vec<_>>())
        .await;
    let mut readers = Vec::new();
    for (node, user) in others.iter().enumerate() {
        readers.push(reader(&c, node, user, chat, 0).await);
    }
    let mut ws = c.ws(0, &sender).await;
    send_many(&mut ws, chat, 300).await;
    let stored = stored_order(&c.app, chat).await;
    assert_eq!(stored.len(), 300);
    for ws in &mut readers {
        assert_eq!(read_in_order(ws, chat, 0, 300).await, stored);
        ws.expect_silence(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn concurrent_senders_on_every_node_into_one_chat_are_seen_in_the_database_order() {
    concurrent_senders_are_seen_in_the_database_order(&cluster(3).await).await;
}

/// Three senders into one chat and three watchers, spread over the nodes of `c`: every
/// stream, the senders' own included, is the database's order.
pub async fn concurrent_senders_are_seen_in_the_database_order(c: &Cluster) {
    let senders = [
        c.app.signup("sender0").await,
        c.app.signup("sender1").await,
        c.app.signup("sender2").await,
    ];
    let watchers = [
        c.app.signup("watcher0").await,
        c.app.signup("watcher1").await,
        c.app.signup("watcher2").await,
    ];
    let members: Vec<&User> = senders[1..].iter().chain(&watchers).collect();
    let chat = c.app.group(&senders[0], &members).await;
    let mut readers = Vec::new();
    for (node, user) in watchers.iter().enumerate() {
        readers.push(reader(c, node % c.bases.len(), user, chat, 0).await);
    }
    let mut sockets = Vec::new();
    for (node, user) in senders.iter().enumerate() {
        sockets.push(reader(c, node % c.bases.len(), user, chat, 0).await);
    }
    let sends = sockets
        .iter_mut()
        .map(|ws| send_many_in_order(ws, chat, 150));
    let reached = futures_util::future::join_all(sends).await;
    let stored = stored_order(&c.app, chat).await;
    assert_eq!(stored.len(), 450);
    for ws in &mut readers {
        assert_eq!(read_in_order(ws, chat, 0, 450).await, stored);
    }
    for (ws, at) in sockets.iter_mut().zip(reached) {
        let rest = read_in_order(ws, chat, at, 450).await;
        assert_eq!(
            rest,
            stored[at as usize..],
            "the senders' streams go on to the end"
        );
    }
}

/// Two members of a chat on two nodes, both sending at once: each node commits into the chat
/// and hears the other's commits over the bus a moment later, so a socket's own ack often comes
/// before the other node's message just before it. Each socket keeps such an ack until the gap
/// fills live instead of reading the chat from the database; both streams stay in seq order.
#[tokio::test]
async fn a_chat_written_from_two_nodes_fills_its_gaps_live_not_from_the_database() {
    let c = cluster(2).await;
    let (alice, bob) = (c.app.signup("alice").await, c.app.signup("bob").await);
    let (carol, dave) = (c.app.signup("carol").await, c.app.signup("dave").await);
    until_each_node_announces(&c, [&carol, &dave]).await;
    let before = catchups(&c).await;
    let chat = c.app.group(&alice, &[&bob]).await;
    let mut sockets = [
        reader(&c, 0, &alice, chat, 0).await,
        reader(&c, 1, &bob, chat, 0).await,
    ];
    let sends = sockets
        .iter_mut()
        .map(|ws| send_many_in_order(ws, chat, 200));
    let reached = futures_util::future::join_all(sends).await;
    let stored = stored_order(&c.app, chat).await;
    assert_eq!(stored.len(), 400);
    for (ws, at) in sockets.iter_mut().zip(reached) {
        let rest = read_in_order(ws, chat, at, 400).await;
        assert_eq!(rest, stored[at as usize..]);
    }
    let read_back = catchups(&c).await - before;
    // Reading every gap from the database at once read more than half of them back.
    assert!(
        read_back < 40.0,
        "{read_back} of 400 messages were read back from the database"
    );
}

/// Messages read from the database by sockets, on every node.
async fn catchups(c: &Cluster) -> f64 {
    let mut sum = 0.0;
    for base in &c.bases {
        sum += metric(
            &metrics_text(base).await,
            "xfchat_ws_catchup_messages_total",
        )
        .expect("the catch-up counter");
    }
    sum
}

/// Sends from `users[i]` on node `i` into a chat of their own until node `i` announced a
/// commit: a node announces only once it has heard another.
async fn until_each_node_announces(c: &Cluster, users: [&User; 2]) {
    let chat = c.app.group(users[0], &[users[1]]).await;
    for (node, user) in users.into_iter().enumerate() {
        let mut ws = c.ws(node, user).await;
        for _ in 0..100 {
            let text = metrics_text(&c.bases[node]).await;
            if metric(
                &text,
                "xfchat_bus_messages_announced_total{how=\"carried\"}",
            ) >= Some(1.0)
            {
                break;
            }
            send_many(&mut ws, chat, 1).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn the_listener_connection_killed_mid_traffic_loses_nothing_and_duplicates_nothing() {
    let c = cluster(2).await;
    let sender = c.app.signup("sender").await;
    let watcher = c.app.signup("watcher").await;
    let chat = c.app.group(&sender, &[&watcher]).await;
    let mut far = reader(&c, 1, &watcher, chat, 0).await;
    let mut ws = c.ws(0, &sender).await;
    let admin = c.app.db.pool().await;
    let mut sent = 0;
    for _ in 0..4 {
        send_many(&mut ws, chat, 50).await;
        sent += 50;
        // Every listener's connection (LISTEN is the last thing it ran), once both are back.
        let listeners = "SELECT pid FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN%'";
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while sqlx::query_scalar::<_, i32>(listeners)
            .fetch_all(&admin)
            .await
            .unwrap()
            .len()
            < 2
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the listeners reconnect"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let killed: Vec<bool> = sqlx::query_scalar(&format!(
            "SELECT pg_terminate_backend(pid) FROM ({listeners}) AS l"
        ))
        .fetch_all(&admin)
        .await
        .unwrap();
        assert_eq!(killed, [true, true], "both listeners terminated");
        send_many(&mut ws, chat, 50).await;
        sent += 50;
    }
    let stored = stored_order(&c.app, chat).await;
    assert_eq!(stored.len(), sent);
    assert_eq!(read_in_order(&mut far, chat, 0, sent as i64).await, stored);
    far.expect_silence(Duration::from_millis(500)).await;
    // The last sends were announced while nobody listened: the database check found them.
    let metrics = metrics_text(&c.bases[1]).await;
    let repaired = metric(&metrics, "xfchat_bus_repaired_messages_total");
    assert!(repaired.is_some_and(|n| n > 0.0), "repaired: {repaired:?}");
}

#[tokio::test]
async fn a_node_killed_mid_traffic_leaves_its_clients_to_resume_on_another_with_nothing_missed() {
    let mut c = cluster(3).await;
    let sender = c.app.signup("sender").await;
    let watcher = c.app.signup("watcher").await;
    let chat = c.app.group(&sender, &[&watcher]).await;
    let mut ws = c.ws(0, &sender).await;
    let mut on_doomed = reader(&c, 1, &watcher, chat, 0).await;
    send_many(&mut ws, chat, 100).await;
    let got = read_in_order(&mut on_doomed, chat, 0, 60).await.len() as i64;
    c.nodes[1] = None; // SIGKILL
    let sending = send_many(&mut ws, chat, 200);
    let resuming = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut moved = reader_from(&c, 2, &watcher, chat, got).await;
        read_in_order(&mut moved, chat, got, 300).await
    };
    let (_, rest) = tokio::join!(sending, resuming);
    let stored = stored_order(&c.app, chat).await;
    assert_eq!(stored.len(), 300, "every acked send is stored");
    assert_eq!(rest, stored[got as usize..]);
}

/// A reconnecting client: resumes at `after` without waiting for `synced` first.
pub async fn reader_from(c: &Cluster, node: usize, user: &User, chat: i64, after: i64) -> Ws {
    let mut ws = c.ws(node, user).await;
    ws.send(&ClientFrame::Resume {
        epoch: None,
        positions: [(ChatId(chat), after)].into(),
        reference: None,
    })
    .await;
    ws
}

#[tokio::test]
async fn a_node_alone_announces_no_commit_and_a_node_that_joins_receives_every_message() {
    let mut c = cluster(1).await;
    let alice = c.app.signup("alice").await;
    let bob = c.app.signup("bob").await;
    let chat = c.app.group(&alice, &[&bob]).await;
    for i in 0..3 {
        c.app
            .send(&alice, chat, Uuid::new_v4(), &format!("alone {i}"))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let announced = |text: &str| {
        ["carried", "named"]
            .map(|how| {
                let series = format!("xfchat_bus_messages_announced_total{{how=\"{how}\"}}");
                metric(text, &series).unwrap_or(0.0)
            })
            .iter()
            .sum::<f64>()
    };
    assert_eq!(
        announced(&metrics_text(&c.bases[0]).await),
        0.0,
        "no commit announced while alone"
    );

    // A second node joins; bob reads there, and alice goes on sending at once.
    let far = c.add_node().await;
    let mut bob_far = reader(&c, far, &bob, chat, 3).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        let id = Uuid::new_v4();
        c.app.send(&alice, chat, id, &format!("met {i}")).await;
        sent.push(id);
    }
    assert_eq!(read_in_order(&mut bob_far, chat, 3, 8).await, sent);
    // From when it heard the other node on, it announces.
    for i in 0..3 {
        c.app
            .send(&alice, chat, Uuid::new_v4(), &format!("heard {i}"))
            .await;
    }
    assert_eq!(read_in_order(&mut bob_far, chat, 8, 11).await.len(), 3);
    let text = metrics_text(&c.bases[0]).await;
    assert!(
        announced(&text) >= 3.0,
        "announced once the other node was heard"
    );
    // Small messages cross whole: the far node reads none of them back.
    assert_eq!(
        metric(&text, "xfchat_bus_messages_announced_total{how=\"named\"}"),
        Some(0.0)
    );
}

#[tokio::test]
async fn the_persist_workers_are_shared_by_the_nodes_so_a_second_node_halves_each_ones_commits_in_flight(
) {
    let mut c = cluster_with(1, &[("XFCHAT_PERSIST_WORKERS", "4")]).await;
    let slots = |text: &str| metric(text, "xfchat_persist_commit_slots");
    assert_eq!(slots(&metrics_text(&c.bases[0]).await), Some(4.0), "alone");
    let far = c.add_node().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let both = [
            slots(&metrics_text(&c.bases[0]).await),
            slots(&metrics_text(&c.bases[far]).await),
        ];
        if both == [Some(2.0), Some(2.0)] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "each node should take 2 of the 4 slots once it hears the other: {both:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // With fewer slots than workers, sends on both nodes into one chat are all stored, in
    // the order both nodes see.
    concurrent_senders_are_seen_in_the_database_order(&c).await;
}

#[tokio::test]
async fn with_another_node_heard_sends_within_the_linger_still_share_one_commit() {
    let mut c = cluster_with(1, &[("XFCHAT_PERSIST_LINGER_US", "1000000")]).await;
    let far = c.add_node().await;
    until_heard(&c, far).await;
    let (alice, bob, carol) = (
        c.app.signup("alice").await,
        c.app.signup("bob").await,
        c.app.signup("carol").await,
    );
    let chats = [
        c.app.group(&alice, &[&bob]).await,
        c.app.group(&alice, &[&carol]).await,
    ];
    let mut a = c.ws(0, &alice).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let (id, frame) = crate::ws::send(chats[i % 2], &format!("m{i}"));
        a.send(&frame).await;
        ids.push(id);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in &ids {
        match tokio::time::timeout(Duration::from_secs(10), a.next()).await {
            Ok(ServerFrame::Ack { client_msg_id, .. }) => assert_eq!(client_msg_id, *id),
            other => panic!("expected the ack of {id}, got {other:?}"),
        }
    }
    assert_eq!(
        crate::group_commit::commits_that_stored(&c.app.db, &ids).await,
        1,
        "one commit carried the four sends, another node heard or not"
    );
}

/// Waits until node 0 and node `far` of `c` heard each other: each took its share of the
/// commit slots.
async fn until_heard(c: &Cluster, far: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let slots = |text: &str| metric(text, "xfchat_persist_commit_slots");
    while slots(&metrics_text(&c.bases[0]).await) != Some(2.0)
        || slots(&metrics_text(&c.bases[far]).await) != Some(2.0)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the nodes never heard each other"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn announcements_within_the_bus_linger_reach_the_other_node_in_one_send_and_in_order() {
    let mut c = cluster_with(
        1,
        &[
            ("XFCHAT_BUS_LINGER_US", "1500000"),
            ("XFCHAT_PERSIST_LINGER_US", "0"),
        ],
    )
    .await;
    let far = c.add_node().await;
    until_heard(&c, far).await;
    let (alice, bob) = (c.app.signup("alice").await, c.app.signup("bob").await);
    let chat = c.app.group(&alice, &[&bob]).await;
    let mut b = reader(&c, far, &bob, chat, 0).await;
    let mut a = c.ws(0, &alice).await;
    let sends = |text: &str| {
        let count = metric(text, "xfchat_bus_send_payloads_count").unwrap_or(0.0);
        let sum = metric(text, "xfchat_bus_send_payloads_sum").unwrap_or(0.0);
        (count, sum)
    };
    let before = sends(&metrics_text(&c.bases[0]).await);
    let mut ids = Vec::new();
    // Five commits, each acked before the next send: five announcements.
    for i in 0..5 {
        let (id, frame) = crate::ws::send(chat, &format!("m{i}"));
        a.send(&frame).await;
        loop {
            match a.next().await {
                ServerFrame::Ack { client_msg_id, .. } if client_msg_id == id => break,
                ServerFrame::Ack { .. } | ServerFrame::Message { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        ids.push(id);
    }
    assert_eq!(read_in_order(&mut b, chat, 0, 5).await, ids);
    let after = sends(&metrics_text(&c.bases[0]).await);
    assert!(
        after.1 - before.1 >= 5.0,
        "the five announcements were sent: {before:?} -> {after:?}"
    );
    assert!(
        after.0 - before.0 < 5.0,
        "in fewer sends than announcements (a heartbeat may add one): {before:?} -> {after:?}"
    );
}

#[tokio::test]
async fn new_chats_read_markers_removals_and_logouts_take_effect_on_the_other_nodes() {
    events_take_effect_on_the_other_node(&cluster(2).await).await;
}

/// New chats, read markers, removals and logouts made on node 0 of `c`, seen on node 1.
pub async fn events_take_effect_on_the_other_node(c: &Cluster) {
    let alice = c.app.signup("alice").await;
    let bob = c.app.signup("bob").await;
    let mut bob_far = c.ws(1, &bob).await;
    // A new chat made on node 0.
    let chat = c.app.group(&alice, &[&bob]).await;
    loop {
        if let ServerFrame::Chat { .. } = bob_far.next().await {
            break;
        }
    }
    // A read marker set on node 0 (bob's: alice's moved with her send).
    c.app.send(&alice, chat, Uuid::new_v4(), "hello").await;
    let (status, _) = c
        .app
        .post(
            &format!("/api/chats/{chat}/read"),
            &bob,
            json!({ "seq": 1 }),
        )
        .await;
    assert!(status.is_success());
    loop {
        if let ServerFrame::Read { user_id, seq, .. } = bob_far.next().await {
            assert_eq!((user_id.0, seq), (bob.id, 1));
            break;
        }
    }
    // Removed on node 0: told on node 1, and nothing more of the chat reaches it.
    let (status, _) = c
        .app
        .call(
            reqwest::Method::DELETE,
            &format!("/api/chats/{chat}/members/{}", bob.id),
            Some(&alice.token),
            None,
        )
        .await;
    assert!(status.is_success());
    loop {
        if let ServerFrame::ChatRemoved { chat_id } = bob_far.next().await {
            assert_eq!(chat_id, ChatId(chat));
            break;
        }
    }
    c.app.send(&alice, chat, Uuid::new_v4(), "after").await;
    bob_far.expect_silence(Duration::from_millis(700)).await;
    // A logout on node 0 closes bob's socket on node 1 with its code.
    let (status, _) = c.app.post("/api/auth/logout", &bob, json!({})).await;
    assert!(status.is_success());
    let (frame, _) = bob_far.until_closed(Duration::from_secs(10)).await;
    assert_eq!(
        u16::from(frame.expect("a close frame").code),
        close::TOKEN_REVOKED
    );
}

#[tokio::test]
async fn an_event_forged_on_the_bus_reaches_no_socket_and_is_counted() {
    let c = cluster(1).await;
    let alice = c.app.signup("alice").await;
    let mut ws = c.ws(0, &alice).await;
    // Whoever may NOTIFY (or publish on NATS) but lacks the secret: a message "from" anyone,
    // unsealed, and one sealed with a guessed secret.
    let forged = json!({
        "node": "intruder",
        "at": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64,
        "users": [alice.id],
        "frame": {"type": "chat_removed", "chat_id": 1},
    })
    .to_string();
    let guessed = format!("AAAA.{forged}");
    let pool = c.app.db.pool().await;
    for payload in [&forged, &guessed] {
        sqlx::query("SELECT pg_notify('xfchat_events', $1)")
            .bind(payload)
            .execute(&pool)
            .await
            .unwrap();
    }
    ws.expect_silence(Duration::from_millis(1500)).await;
    let refused = metric(
        &metrics_text(&c.bases[0]).await,
        "xfchat_bus_events_refused_total{reason=\"seal\"}",
    );
    assert_eq!(refused, Some(2.0));
}

#[tokio::test]
async fn a_chat_event_too_large_for_the_bus_reaches_members_on_other_nodes() {
    let c = cluster(2).await;
    let (alice, bob) = (c.app.signup("alice").await, c.app.signup("bob").await);
    c.app.befriend(&alice, &bob).await;
    let mut others = crate::common::friends_of(&c.app, &alice, 119).await;
    others.push(bob.id);
    let mut ws = c.ws(1, &bob).await;
    let (status, body) = c
        .app
        .post(
            "/api/chats",
            &alice,
            json!({ "title": "a crowd", "member_ids": others }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    assert!(
        body["chat"].to_string().len() > xfchat::bus::PAYLOAD_MAX,
        "a chat too large for one payload"
    );
    match ws.next().await {
        ServerFrame::Chat { chat } => assert_eq!(chat.members.len(), 121),
        other => panic!("expected the chat, got {other:?}"),
    }
    let too_large = metric(
        &metrics_text(&c.bases[0]).await,
        "xfchat_bus_events_too_large_total",
    );
    assert_eq!(too_large, Some(0.0));
}
