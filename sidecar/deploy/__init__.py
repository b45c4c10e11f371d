"""Deployment artifacts: the Modal app serving vLLM."""
