"""The drift monitor step: live traffic against the champion's training reference profile."""
