"""Dataset kinds: one module per kind, each registered in orchestrator.contract.kinds (see
workers/plugins.py). A kind module imports only the contract at module level; torch,
transformers and the data code are imported inside the methods that need them."""
