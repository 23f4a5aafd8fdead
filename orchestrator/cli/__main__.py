"""`python -m orchestrator.cli`: the `orch` command (the sbatch script and Ray jobs run it so)."""

import sys

from orchestrator.cli import main

sys.exit(main())
