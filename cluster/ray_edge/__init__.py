"""Ray at the edge: the runtime, the actors, the backend and the client. The only room
that imports ray (checked by ``tests/unit/test_architecture.py``), and only when a
:class:`~cluster.ray_edge.client.Fleet` is first used.
"""

import os

# Ray's token authentication, chosen deliberately rather than left to Ray's default
# (which only warns): an embedded Ray gets a private token (see ``token.py``); a joined
# cluster's comes from RAY_AUTH_TOKEN or ~/.ray/auth_token. Ray reads this when it is
# imported, and every import of ray in framefleet is under this package.
os.environ.setdefault("RAY_AUTH_MODE", "token")
