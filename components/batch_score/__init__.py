"""Batch score: classify a file or folder of texts with a registered version, as the server would."""
