"""Token stores: the record, a file, PostgreSQL, encryption, and which store the settings choose."""
