"""Reward sources and judges: the gold sentiment classifier, learned reward models."""
