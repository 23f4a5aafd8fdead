"""Export a checkpoint's model as a self-contained Hugging Face directory.

The checkpoint's ``hf/`` folder already is one: the VLM saved with ``save_pretrained`` (weights,
config, tokenizer, image processor), the classification head and ``orch_classifier.json`` (head
width, pooling, and each dataset's kind, class count and label names). Exporting hard-links those
files into the target (copies across file systems), so the export costs no space and the
checkpoint can be pruned later without breaking it. Load it with
``workers.models.classifier.VLMClassifier.from_pretrained(DIR)``, or the bare VLM with
``transformers.AutoModelForImageTextToText.from_pretrained(DIR)``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from orchestrator.contract import checkpoint as ckpt
from orchestrator.contract.atomic import atomic_write_json
from orchestrator.contract.errors import OrchError

logger = logging.getLogger("orch.export")
EXPORT_FILE = "orch_export.json"


def export_checkpoint(checkpoints: Path, step: int, out: Path, info: dict[str, object]) -> Path:
    """Link (or copy) ``step``'s hf/ files into ``out``; write orch_export.json last."""
    source = ckpt.checkpoint_dir(checkpoints, step)
    if not (source / ckpt.COMPLETE).is_file():
        raise OrchError(f"checkpoint step {step} is not complete ({source}); nothing to export")
    hf = source / ckpt.HF_DIR
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in sorted(hf.iterdir()):
        if not f.is_file():
            continue
        try:
            os.link(f, tmp / f.name)
        except OSError:  # another file system: copy instead
            shutil.copy2(f, tmp / f.name)
    atomic_write_json(tmp / EXPORT_FILE, {"step": step, "source": str(hf), **info})
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    logger.info("exported step %d to %s", step, out)
    return out


def best_step(run: Path) -> int:
    path = run / "best.json"
    if not path.is_file():
        raise OrchError(f"{run}: no best.json yet (no checkpoint has been evaluated)")
    return int(json.loads(path.read_text())["step"])
