"""The run directory and the runs around it: `rundir` (the contract every stage reads and writes: paths, typed
records and the resolved `TrainConfig`), `lock` (one writer per run directory) and `registry` (the SQLite index
of runs). It imports only the foundation and `honed.config` (tests/unit/test_layers.py). The module map is
docs/architecture.md.
"""
