"""EDM training with score-structure probes at checkpoints (`python -m train`)."""
