"""Training-free NAS proxies (METHODS §6): filled by the later training-free-proxies issue."""
