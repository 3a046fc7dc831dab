"""The data stage: read every format into one canonical `Conversation`, validate it, report on it (`honed data
check`), split it without leaks (`data split`) and render it into token ids and a loss mask (`data show`,
training). Module map: docs/architecture.md.
"""
