"""Candidates: expand the candidate list of a run, and pick the winner after evaluation."""
