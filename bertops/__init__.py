"""bertops: a Kubeflow/KServe MLOps platform for BERT-style text classifiers."""

__version__ = "0.1.0"
