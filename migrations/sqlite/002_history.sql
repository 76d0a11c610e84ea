-- History: mark updates made by "restore version N", and cache authorship
-- (who wrote each character) at some versions so it is never replayed from 0 twice.

ALTER TABLE updates ADD COLUMN restored_from INTEGER;

CREATE TABLE authorship (
    doc_id   INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    version  INTEGER NOT NULL,
    spans    TEXT NOT NULL,                -- JSON [[length, author], ...]
    PRIMARY KEY (doc_id, version)
) WITHOUT ROWID;
