"""Register: record a trained model as a new version in the MLflow model registry."""
