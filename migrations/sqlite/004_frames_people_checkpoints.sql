-- Where each `updates` frame ended (the last update of every commit: a resume
-- after a reload is cut there, as the frames were broadcast), who made each
-- update (a stable person id and the colour they chose, besides the name),
-- named versions (checkpoints), and the old names of renamed documents.

ALTER TABLE updates ADD COLUMN frame_end INTEGER NOT NULL DEFAULT 0;
ALTER TABLE updates ADD COLUMN person TEXT;
ALTER TABLE updates ADD COLUMN color TEXT;

CREATE TABLE checkpoints (
    doc_id   INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    version  INTEGER NOT NULL,
    name     TEXT NOT NULL,
    author   TEXT NOT NULL,
    time     REAL NOT NULL,
    PRIMARY KEY (doc_id, version)
) WITHOUT ROWID;

CREATE TABLE renamed (
    name     TEXT PRIMARY KEY,                 -- a name the document had before
    doc_id   INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    time     REAL NOT NULL
) WITHOUT ROWID;
