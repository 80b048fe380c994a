"""Small helpers shared by the pipeline: atomic file writes, checkpoints, freezing, accuracy."""
