"""What runs on every node: GPU sources (NVML, static), NVENC capability, registration,
the node agent and the encoder worker. Plain classes; Ray is applied in ``ray_edge``."""
