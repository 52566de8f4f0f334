"""Serving: a plain predictor class and the thin KServe model that exposes it over V1 and V2."""
