"""Metrics over lens outputs and hidden states: language mass, answer tokens, similarity, neurons."""
