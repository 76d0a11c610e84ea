-- The name and colour of each person whose updates compaction dropped, from
-- the latest of them, so that /authors still names the text they wrote
-- (store_pg.people: these, then each person's latest stored update over them).

CREATE TABLE people (
    doc_id   BIGINT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    person   TEXT COLLATE "C" NOT NULL,
    version  BIGINT NOT NULL,                  -- the dropped update the name and colour come from
    name     TEXT NOT NULL,
    color    TEXT,
    PRIMARY KEY (doc_id, person)
);
