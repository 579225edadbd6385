"""Where media bytes live besides a local path, and how they move: object storage URLs
and their roots (pure), the S3 client (on the head to probe and list, on nodes to fetch
and upload), and node-local scratch space. Used on the head and on every node."""
