"""orchestrator/checks"""
