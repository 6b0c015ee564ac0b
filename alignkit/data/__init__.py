"""Shared data abstractions: tasks (prompts, demonstrations, splits) and preference datasets."""
