"""Records on their way out: shaped to the catalog and schema, versioned, written in blocks."""
