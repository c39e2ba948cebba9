"""OAuth 2.0 (3LO) with Atlassian's rotating refresh tokens, and where they are kept."""
