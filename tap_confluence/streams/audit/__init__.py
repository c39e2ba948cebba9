"""The audit_records stream: the stream, its pages and the window walker."""
