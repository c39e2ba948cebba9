"""Every settings rule: auth combinations, URLs, secrets, dates, stores, admin, --state."""
