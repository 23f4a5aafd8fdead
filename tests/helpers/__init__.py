"""What several test modules share: job builders, fakes, run-directory fabricators and process
helpers. Test modules import from here (``from tests.helpers.jobs import demo_job``), never from
one another; pytest fixtures stay in ``tests/conftest.py``."""
