"""Ray at the edge: the runtime, the actors, the backend and the client. The only room
that imports ray."""
