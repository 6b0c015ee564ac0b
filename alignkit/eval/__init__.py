"""The shared evaluator: sampling on held-out prompts, gold reward, KL to the reference, win rates."""
