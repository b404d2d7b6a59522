"""Renderings of diagnoses: terminal summary (rich) and the JSON document."""
