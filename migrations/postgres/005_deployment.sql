-- Which deployment this database is, made once at random: every process on this database names its
-- Redis channels after it (cluster.py), so that two deployments sharing one Redis server never hear
-- each other's news (pub/sub channels are server-wide: the database number in a Redis URL does not
-- separate them). A copy made with `collab copy` is another deployment and gets its own.

CREATE TABLE deployment (
    one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),  -- one row
    id  TEXT NOT NULL
);
INSERT INTO deployment (id) VALUES (substr(md5(random()::text || clock_timestamp()::text), 1, 16));
