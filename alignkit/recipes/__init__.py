"""The recipes alignkit ships (YAML), and :mod:`alignkit.recipes.bundled`, which finds them by name."""
