"""The user_activity stream and the ledger that decides what is new."""
