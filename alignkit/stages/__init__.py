"""The shared stages of a run: the cache key of each stage, and
the workspace that builds them lazily and hands them to methods. Docstring only."""
