"""orchestrator/views"""
