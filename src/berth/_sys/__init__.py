"""Layer 0: thin bindings to the kernel and small file-system helpers (stdlib only)."""
