-- Documents, their update log (one row per version) and text snapshots.
-- Versions: updates.version is the version the update produced (1, 2, ...);
-- snapshots.version is the version whose text is stored.

CREATE TABLE documents (
    id       INTEGER PRIMARY KEY,
    name     TEXT NOT NULL UNIQUE,
    version  INTEGER NOT NULL DEFAULT 0,   -- last durable version
    length   INTEGER NOT NULL DEFAULT 0,   -- UTF-16 length of the text at `version`
    created  REAL NOT NULL,
    updated  REAL NOT NULL
);

CREATE TABLE updates (
    doc_id    INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    version   INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    author    TEXT NOT NULL,
    time      REAL NOT NULL,
    changes   TEXT NOT NULL,               -- ChangeSetJSON, canonical form
    inserted  INTEGER NOT NULL,            -- UTF-16 units inserted (history summaries)
    deleted   INTEGER NOT NULL,            -- UTF-16 units deleted
    PRIMARY KEY (doc_id, version)
) WITHOUT ROWID;

CREATE TABLE snapshots (
    doc_id   INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    version  INTEGER NOT NULL,
    text     TEXT NOT NULL,
    time     REAL NOT NULL,
    PRIMARY KEY (doc_id, version)
) WITHOUT ROWID;
