"""orchestrator/launch"""
