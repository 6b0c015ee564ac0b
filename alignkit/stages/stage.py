"""``stage``: a shared stage as a lazy attribute of :class:`~alignkit.stages.builder.StageBuilder`, kept in
one table of what was built or provided, so that the builder is the one place a stage is ever set."""

from __future__ import annotations


class stage:  # noqa: N801  (a decorator, like functools.cached_property)
    """Built by the decorated function on first read and kept in the builder's ``stages``, the table that
    :meth:`~alignkit.stages.builder.StageBuilder.provide` also fills."""

    def __init__(self, build):
        self.build, self.__doc__ = build, build.__doc__

    def __set_name__(self, owner, name: str):
        self.name = name

    def __get__(self, builder, owner=None):
        if builder is None:
            return self
        if self.name not in builder.stages:
            builder.stages[self.name] = self.build(builder)
        return builder.stages[self.name]
