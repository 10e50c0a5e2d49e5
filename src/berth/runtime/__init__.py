"""Layer 1: the low-level OCI runtime behind ``berth-runtime`` (one module per verb)."""
