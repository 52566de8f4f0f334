"""Validate: a Great Expectations gate in front of everything else."""
