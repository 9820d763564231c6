"""The server end's side towards the origin: a keep-alive connection pool."""
