-- The search index takes new messages into a pending list, which the insert that finds it
-- past `gin_pending_list_limit` (4 MB by default) merges into the index, inside its own
-- transaction. With the default, that was one commit in every few thousand spending about
-- 120 ms of PostgreSQL's CPU while holding its chats' rows: every commit of another node into
-- those chats waited behind it, and with them all of that node's commit slots (docs/scaling.md,
-- seventh round). A list of 128 kB is merged about thirty times as often, in a few ms each.
ALTER INDEX messages_search SET (gin_pending_list_limit = 128);
