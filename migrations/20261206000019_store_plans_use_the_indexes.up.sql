-- The group commit's kept plans (20261205000012) read every table by the batch's keys, with a
-- LIMIT 1 probe per key, so that no plan hashes a whole table. A probe may still be planned as
-- a sequential scan: when a vacuum has seen a table empty, the planner trusts its zero pages
-- instead of assuming a few, and a scan of nothing costs less than an index. A connection that
-- made its plans then kept them while `messages` grew: on a new database vacuumed before its
-- first messages, the store scanned the whole table once per send, 300 sends took a second of
-- PostgreSQL's CPU by 20,000 messages, and the node answered `overloaded` at 3,000 msg/s until
-- an autovacuum's analyze replaced the plans. Every table these functions read has an index
-- for their keys: they plan with sequential scans off.
ALTER FUNCTION xfchat_store_messages(bigint[], bigint[], uuid[], text[], text, text)
    SET enable_seqscan = off;
ALTER FUNCTION xfchat_store_messages(bigint[], bigint[], uuid[], text[], bigint[], text, text)
    SET enable_seqscan = off;
ALTER FUNCTION xfchat_store_messages(bigint[], bigint[], uuid[], text[], bigint[], text[], text, text)
    SET enable_seqscan = off;
ALTER FUNCTION xfchat_store_batch(bigint[], bigint[], uuid[], text[], text, text)
    SET enable_seqscan = off;
ALTER FUNCTION xfchat_store_batch(bigint[], bigint[], uuid[], text[], bigint[], text, text)
    SET enable_seqscan = off;
ALTER FUNCTION xfchat_store_batch(bigint[], bigint[], uuid[], text[], bigint[], text[], text, text)
    SET enable_seqscan = off;
ALTER FUNCTION xfchat_store_batch(bigint[], bigint[], uuid[], text[], bigint[], text[], text, text, text)
    SET enable_seqscan = off;
ALTER FUNCTION xfchat_hook_messages(bigint[], bigint[], bigint[], bigint[], bigint[], text)
    SET enable_seqscan = off;
