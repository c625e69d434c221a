DROP TABLE conversation_members;
DROP TABLE conversations;
DROP TYPE conversation_kind;
