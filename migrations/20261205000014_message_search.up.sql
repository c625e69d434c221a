-- Full-text search over messages as they are now (edited text, never a deleted one). The
-- `simple` configuration lowercases words and does not stem them, so it works alike for every
-- language written with spaces between words; entries (edits, reactions) are not searched.
CREATE INDEX messages_search ON messages USING gin (to_tsvector('simple', body))
    WHERE kind = 'message' AND deleted_at IS NULL;
