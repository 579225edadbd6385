"""Media and ffmpeg: probing, the encoder catalog, pure argv builders, the ffmpeg process,
opened input/output files and partial files. Used on the head (probe) and on every node."""
