ALTER TABLE conversations DROP COLUMN rewound_to;
DROP TABLE history;
