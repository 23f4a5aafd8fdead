"""Plugins defined inside the test suite (to prove an extension needs no edit to orch)."""
