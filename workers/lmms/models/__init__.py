"""orch's model classes for lmms-eval, found by lmms-eval's plugin mechanism
(``LMMS_EVAL_PLUGINS=workers.lmms lmms-eval --model orch ...``: ``<plugin>.models.<name>.<class>``);
orch's own eval parts pass the object instead. Nothing here imports lmms-eval (orch's environment
has none)."""

AVAILABLE_MODELS = {"orch": "OrchLmms"}
