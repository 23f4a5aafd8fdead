"""lmms-eval's plugin mechanism adds this package's folder to its task search path (it must
exist); orch ships no task of its own here: tasks come from lmms-eval and
``evaluation.lmms.include_path``."""
