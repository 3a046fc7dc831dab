"""`python -m honed ...` runs the command line, the same as the `honed` script."""

from honed.cli import app

if __name__ == "__main__":
    app()
