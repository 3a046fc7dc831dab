"""The run directory and the runs around it: `rundir` (the contract every stage reads and writes: paths and
typed records), `lock` (one writer per run directory) and `registry` (the SQLite index of runs). The module
map is docs/architecture.md.
"""
