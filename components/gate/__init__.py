"""Gate: promote the run's winner only if it beats the registry's champion and clears the thresholds."""
