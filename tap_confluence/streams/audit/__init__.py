"""The audit log: the audit_records stream, and the reading of it user_activity shares."""
