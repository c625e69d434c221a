-- The identity of the message history that clients hold positions (seqs) in. A restore from a
-- backup, or the promotion of a standby that lacked the tail, rewinds it: seqs are then taken
-- again by other messages. The server notices (the database's fingerprint, its system id,
-- timeline and oid, changed) or is told (`xfchat epoch --renew`), and starts a new epoch; each
-- chat keeps the lowest seq any rewind set it back to, so a client whose positions belong to an
-- older epoch is set back to what both histories share.
CREATE TABLE history (
    only_row    BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
    epoch       UUID        NOT NULL,
    fingerprint TEXT        NOT NULL,
    changed_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- NULL: never rewound.
ALTER TABLE conversations ADD COLUMN rewound_to BIGINT;
