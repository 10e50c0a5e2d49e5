"""Layer 0: OCI runtime-spec and image-spec models (plain data, stdlib only)."""
