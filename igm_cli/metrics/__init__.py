"""Evaluation metrics: mode coverage on toy mixtures (toy) and sample-set distances (distances)."""
