"""The honed command line: parse, call one function, print; no logic lives here. Every HonedError becomes
one clear message on stderr and exit status 2, never a traceback, and one module per pipeline stage
registers its commands on `app` (imported at the bottom, in the order `--help` lists them). Module map:
docs/architecture.md; every command's help: docs/cli.md.
"""

from honed.cli.app import app, data_app, err_console, runs_app, user_errors  # noqa: F401  (the entry point: honed.cli:app)

# The commands, one module per pipeline stage; importing a module registers its commands.
from honed.cli import data, train, evaluate, report, ship, monitor, models  # noqa: F401
