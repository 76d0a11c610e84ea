-- Where each `updates` frame ended (the last update of every commit: a resume
-- after a reload, or at another process, is cut there, as the frames were
-- broadcast), who made each update (a stable person id and the colour they
-- chose, besides the name), named versions (checkpoints), and the old names
-- of renamed documents.

ALTER TABLE updates ADD COLUMN frame_end BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE updates ADD COLUMN person TEXT;
ALTER TABLE updates ADD COLUMN color TEXT;

CREATE TABLE checkpoints (
    doc_id   BIGINT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    version  BIGINT NOT NULL,
    name     TEXT NOT NULL,
    author   TEXT NOT NULL,
    time     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (doc_id, version)
);

CREATE TABLE renamed (
    name     TEXT COLLATE "C" PRIMARY KEY,     -- a name the document had before
    doc_id   BIGINT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    time     DOUBLE PRECISION NOT NULL
);
