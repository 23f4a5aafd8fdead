"""orch's own plugin: the built-in dataset kinds and metrics (entry point ``orch.plugins``).

Importing this module registers them; it imports nothing heavy (see workers/kinds)."""

from orchestrator.contract.kinds import register_kind
from workers.kinds.classification import KIND as CLASSIFICATION
from workers.kinds.mcq import KIND as MCQ
from workers.kinds.vqa import KIND as VQA
from workers.metrics import register_builtin_metrics

register_kind(CLASSIFICATION)
register_kind(VQA)
register_kind(MCQ)
register_builtin_metrics()
