"""HTTP: the base stream, its one request path, retries, paginators and request limits."""
