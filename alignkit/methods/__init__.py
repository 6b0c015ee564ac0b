"""Alignment methods, one module each; each registers itself with ``@register_method``."""
