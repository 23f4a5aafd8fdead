"""orchestrator/contract"""
