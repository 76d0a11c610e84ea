-- Which deployment this database is, made once at random: every process on this database names its
-- Redis channels after it (cluster.py), so that two deployments sharing one Redis server never hear
-- each other's news (pub/sub channels are server-wide: the database number in a Redis URL does not
-- separate them). A copy made with `collab copy` is another deployment and gets its own.
-- Also which secret the last process to start signs links with (a fingerprint, never the secret), and
-- when it started: a process that starts with another one says so (cluster.py), since links made at
-- one process would be refused at the other.

CREATE TABLE deployment (
    one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),  -- one row
    id  TEXT NOT NULL,
    secret_check TEXT,                                 -- Access.fingerprint() of the last process to start
    secret_at    DOUBLE PRECISION                      -- when it started (seconds since the epoch)
);
INSERT INTO deployment (id) VALUES (substr(md5(random()::text || clock_timestamp()::text), 1, 16));
