"""lmms-eval tasks as eval parts.

Two sides, two Pythons. ``workers.lmms.part`` runs in orch's environment (the eval worker of any
backend): it runs a checkpoint's tasks in the lmms-eval environment (``evaluation.lmms.python``,
.venv-lmms) as one subprocess, checks what came back, never lmms-eval's exit status, and writes
each part's result in orch's shape. ``workers.lmms.entry`` and ``workers.lmms.models.orch`` run
in the lmms-eval environment: the entry calls lmms-eval's Python API (``simple_evaluate``) once
per task, and the model is orch's model class for lmms-eval (also found by lmms-eval's plugin
mechanism, ``LMMS_EVAL_PLUGINS=workers.lmms``).
"""
