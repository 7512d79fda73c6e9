"""Data sets, subjects, NIfTI I/O and input validation."""
