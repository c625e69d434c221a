use xfchat::db::MIGRATOR;

use crate::common::TestDb;

async fn tables(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn migrations_apply_down_and_up_again_on_a_database_with_data() {
    let db = TestDb::create().await;
    let pool = db.pool().await;
    MIGRATOR.run(&pool).await.unwrap();
    let all = tables(&pool).await;
    assert_eq!(
        all,
        [
            "attachment_chunks",
            "attachments",
            "blocks",
            "conversation_members",
            "conversations",
            "external_users",
            "friend_requests",
            "friendships",
            "history",
            "instances",
            "messages",
            "presence",
            "reactions",
            "revoked_tokens",
            "sessions",
            "users",
            "webhook_events",
            "ws_tickets"
        ]
    );
    sqlx::raw_sql(
        "INSERT INTO users (username, display_name, password_hash) VALUES ('a', 'a', 'x'), ('b', 'b', 'x');
         INSERT INTO friend_requests (from_user_id, to_user_id, status) VALUES (1, 2, 'accepted');
         INSERT INTO friendships (user_low, user_high) VALUES (1, 2);
         INSERT INTO conversations (kind, created_by, direct_low, direct_high, last_seq) VALUES ('direct', 1, 1, 2, 1);
         INSERT INTO conversation_members (conversation_id, user_id) VALUES (1, 1), (1, 2);
         INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, body)
             VALUES (1, 1, 1, gen_random_uuid(), 'hi');",
    )
    .execute(&pool)
    .await
    .unwrap();

    MIGRATOR
        .undo(&pool, 0)
        .await
        .expect("every migration has a down step");
    assert!(tables(&pool).await.is_empty(), "down removes every table");
    MIGRATOR.run(&pool).await.expect("up again");
    assert_eq!(tables(&pool).await, all);
}
