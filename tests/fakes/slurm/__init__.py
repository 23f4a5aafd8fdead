"""A scripted fake SLURM: ``sbatch``, ``squeue``, ``scontrol``, ``scancel``, ``sacct`` (and an
``srun`` that only exists, as submitit looks for it) as executables in this folder. Put the
folder first on PATH and point ``FAKE_SLURM_DIR`` at a state directory; ``FakeSlurm`` (in
``fakeslurm``) reads and scripts that state from a test."""
