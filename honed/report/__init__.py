"""The run report: one self-contained HTML page per run (or per comparison), and the export of a finished run
to experiment trackers (MLflow, TensorBoard, Weights & Biases). Module map: docs/architecture.md.
"""
