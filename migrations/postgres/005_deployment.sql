-- Which deployment this database is, made once at random: every process on this database names its
-- Redis channels after it (cluster.py), so that two deployments sharing one Redis server never hear
-- each other's news (pub/sub channels are server-wide: the database number in a Redis URL does not
-- separate them). A copy made with `collab copy` is another deployment and gets its own.
-- Also what the last process to start ran with, of what every process must share (JSON: its secret's
-- fingerprint, never the secret; whether it used Redis), and when it started: a process that starts
-- otherwise says so (cluster.py), since links made at one would be refused at the other, or news
-- between them would wait for the database checks.

CREATE TABLE deployment (
    one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),  -- one row
    id  TEXT NOT NULL,
    last_start    TEXT,                                -- {"secret": Access.fingerprint(), "redis": bool}
    last_start_at DOUBLE PRECISION                     -- when that process started (seconds since the epoch)
);
INSERT INTO deployment (id) VALUES (substr(md5(random()::text || clock_timestamp()::text), 1, 16));
