"""The error of a metric that cannot be computed here (shared by the trackers and scorers)."""

from __future__ import annotations

__all__ = ["MetricUnavailable"]


class MetricUnavailable(RuntimeError):
    """A metric cannot be computed because a model, package or weight file is missing.

    The message always says what is missing and how to provide it. Callers that
    treat the metric as optional catch this and write a null column.
    """
