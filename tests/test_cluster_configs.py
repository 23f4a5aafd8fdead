"""The example Ray cluster config is one Ray itself accepts, and keeps the security defaults."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.helpers.paths import ROOT


def test_the_example_ray_cluster_passes_rays_own_validation() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster" / "ray" / "onprem.yaml").read_text())
    validate_config(prepare_config(config))  # raises on a schema error
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "RAY_AUTH_MODE=token" in head
    assert all("RAY_AUTH_MODE=token" in c for c in config["worker_start_ray_commands"][1:])
    assert "token" not in yaml.safe_dump(config.get("setup_commands", []))


def test_local_cluster_scripts_are_executable_and_explain_their_usage() -> None:
    import subprocess

    for name in ("slurm.sh", "ray.sh"):
        script = Path(ROOT / "cluster" / "local" / name)
        out = subprocess.run([str(script), "bogus"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 2
        assert "usage:" in out.stderr or "must run as root" in out.stderr
