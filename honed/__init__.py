"""honed: a supervised fine-tuning workbench that checks data, trains correctly and proves the result."""

__version__ = "0.1.0"
