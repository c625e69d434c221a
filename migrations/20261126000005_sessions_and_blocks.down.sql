DROP TABLE blocks;
DROP TABLE revoked_tokens;
