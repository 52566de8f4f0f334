"""The training pipeline and its entry points: run locally, compile for Kubeflow."""
