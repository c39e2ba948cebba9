"""The user_activity stream, its three sources, and the ledger that decides what is new."""
