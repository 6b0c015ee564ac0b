"""Reinforcement-learning math shared by PPO (pure functions in ``ops``)."""
