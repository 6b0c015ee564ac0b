"""Shared policy abstraction: loading, log-probs over completion tokens, sampling, reference handling."""
