"""Deploy: serve a registered model version as a KServe endpoint."""
