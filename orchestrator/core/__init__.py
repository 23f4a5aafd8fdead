"""orchestrator/core"""
