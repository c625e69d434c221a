//! `xfchat doctor`: what on-call runs against a live database. It checks connectivity and
//! latency, that the schema is this binary's, and the data's integrity, prints a short report,
//! and fails on any finding.

use std::time::Instant;

use sqlx::PgPool;

use crate::config::Config;
use crate::db;

/// One integrity rule: a name, and a query returning one text row per violation.
const CHECKS: &[(&str, &str)] = &[
    (
        "message seqs form 1..last_seq without gap or duplicate",
        "SELECT format('chat %s: last_seq %s, %s messages, %s distinct seqs, max seq %s', \
                c.id, c.last_seq, count(m.id), count(DISTINCT m.seq), coalesce(max(m.seq), 0)) \
         FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id GROUP BY c.id \
         HAVING count(m.id) <> c.last_seq OR count(DISTINCT m.seq) <> count(m.id) \
             OR coalesce(max(m.seq), 0) <> c.last_seq OR coalesce(min(m.seq), 1) <> 1",
    ),
    (
        "messages belong to existing chats and senders",
        "SELECT format('message %s: chat %s or sender %s does not exist', m.id, m.conversation_id, m.sender_id) \
         FROM messages m LEFT JOIN conversations c ON c.id = m.conversation_id \
         LEFT JOIN users u ON u.id = m.sender_id WHERE c.id IS NULL OR u.id IS NULL",
    ),
    (
        "members belong to existing chats and users",
        "SELECT format('member row chat %s user %s points at nothing', cm.conversation_id, cm.user_id) \
         FROM conversation_members cm LEFT JOIN conversations c ON c.id = cm.conversation_id \
         LEFT JOIN users u ON u.id = cm.user_id WHERE c.id IS NULL OR u.id IS NULL",
    ),
    (
        "friendships and requests point at existing users",
        "SELECT format('friendship %s-%s points at a missing user', f.user_low, f.user_high) \
         FROM friendships f WHERE NOT EXISTS (SELECT 1 FROM users WHERE id = f.user_low) \
            OR NOT EXISTS (SELECT 1 FROM users WHERE id = f.user_high) \
         UNION ALL \
         SELECT format('friend request %s points at a missing user', r.id) FROM friend_requests r \
         WHERE NOT EXISTS (SELECT 1 FROM users WHERE id = r.from_user_id) \
            OR NOT EXISTS (SELECT 1 FROM users WHERE id = r.to_user_id)",
    ),
    (
        "every member's last_read_seq is within 0..last_seq",
        "SELECT format('chat %s user %s: last_read_seq %s beyond last_seq %s', c.id, cm.user_id, cm.last_read_seq, c.last_seq) \
         FROM conversation_members cm JOIN conversations c ON c.id = cm.conversation_id \
         WHERE cm.last_read_seq < 0 OR cm.last_read_seq > c.last_seq",
    ),
];

/// Most findings printed per check.
const SHOWN: i64 = 20;

/// Runs every check and prints the report; errors when anything is wrong.
pub async fn run(config: &Config) -> anyhow::Result<()> {
    println!("xfchat doctor: {}", config.database_display());
    let started = Instant::now();
    let pool = db::connect_direct(config).await?;
    println!("  ok    connected in {} ms", started.elapsed().as_millis());
    let started = Instant::now();
    sqlx::query("SELECT 1").execute(&pool).await?;
    println!(
        "  ok    round trip {:.2} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    let mut findings = 0;
    match db::ensure_current(&pool).await {
        Ok(()) => println!("  ok    schema is at this binary's migrations"),
        Err(e) => {
            findings += 1;
            println!("  FAIL  schema: {e}");
        }
    }
    for (name, query) in CHECKS {
        findings += check(&pool, name, query).await?;
    }
    pool.close().await;
    if findings > 0 {
        anyhow::bail!("doctor found {findings} problem(s)");
    }
    println!("no problems found");
    Ok(())
}

async fn check(pool: &PgPool, name: &str, query: &str) -> anyhow::Result<usize> {
    let rows: Vec<String> = match sqlx::query_scalar(&format!("{query} LIMIT {SHOWN}"))
        .fetch_all(pool)
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            println!("  FAIL  {name}: the check could not run: {e}");
            return Ok(1);
        }
    };
    if rows.is_empty() {
        println!("  ok    {name}");
    } else {
        println!("  FAIL  {name}:");
        for row in &rows {
            println!("          {row}");
        }
    }
    Ok(rows.len())
}
