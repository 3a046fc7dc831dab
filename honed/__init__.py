"""honed: a supervised fine-tuning workbench that checks data, trains correctly and proves the result."""

import time

from honed.threads import configure_environment

IMPORTED_AT = time.time()  # where /proc cannot tell the process start (honed.train.timings)

# Before any honed module imports torch: libgomp reads its wait policy once, at torch's first import
# (honed/threads.py, rule 1). Never overrides a value the user set.
configure_environment()

__version__ = "0.1.0"
