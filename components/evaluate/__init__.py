"""Evaluate: held-out test metrics and the confusion matrix."""
