-- Access control: share-link tokens are signed over a per-document salt, so
-- "reset links" (a new salt) invalidates every token of that document.
ALTER TABLE documents ADD COLUMN salt TEXT NOT NULL DEFAULT '';
