"""Layer 5: command lines (``berth-runtime``'s runc-compatible one; later ``berth``)."""
