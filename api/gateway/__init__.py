"""The HTTP gateway: the FastAPI app, its routes, schemas, auth, events and metrics."""
