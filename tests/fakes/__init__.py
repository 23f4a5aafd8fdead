"""Stand-ins for external programs, for fast tests that need neither root nor a cluster."""
