"""The data stage: read -> validate -> report -> split -> render."""
