-- A document's id is never given again after the document is deleted. Without AUTOINCREMENT SQLite
-- gives the newest row's id to the next row once that row is gone: a document deleted and another made
-- under its name got its id, and a request that read the first one's id (a restore reading an old text
-- meanwhile) could act on the second. AUTOINCREMENT keeps the highest id ever given in sqlite_sequence.
-- SQLite cannot add it to a table: the table is made again and its rows copied (SQLite's "other kinds of
-- table schema changes"; the migration runner turns foreign keys off around it and checks them before it
-- commits, so the rows that reference a document keep it).
CREATE TABLE documents_new (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    name     TEXT NOT NULL UNIQUE,
    version  INTEGER NOT NULL DEFAULT 0,   -- last durable version
    length   INTEGER NOT NULL DEFAULT 0,   -- UTF-16 length of the text at `version`
    created  REAL NOT NULL,
    updated  REAL NOT NULL,
    salt     TEXT NOT NULL DEFAULT ''      -- signs the document's share links (003_access.sql)
);
INSERT INTO documents_new(id, name, version, length, created, updated, salt)
    SELECT id, name, version, length, created, updated, salt FROM documents;
DROP TABLE documents;
ALTER TABLE documents_new RENAME TO documents;
