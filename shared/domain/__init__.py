"""Pure attendance domain rules: codes, UPNs and school days (no I/O)."""
