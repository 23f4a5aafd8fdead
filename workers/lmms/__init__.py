"""lmms-eval tasks as eval parts.

Two sides, two Pythons. ``workers.lmms.part`` runs in orch's environment (the eval worker of any
backend): it runs one task of one checkpoint in the lmms-eval environment
(``evaluation.lmms.python``, .venv-lmms) as a subprocess, checks what came back, never lmms-eval's
exit status, and writes the part's result in orch's shape. ``workers.lmms.entry`` and
``workers.lmms.model`` run in the lmms-eval environment: the entry calls lmms-eval's Python API
(``simple_evaluate``), and the model is orch's model class for lmms-eval.
"""
