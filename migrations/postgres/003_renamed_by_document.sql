-- The old names of one document, found without scanning every old name of every
-- document: a copy reads them per document, and deleting a document deletes them.
CREATE INDEX renamed_doc ON renamed (doc_id);
