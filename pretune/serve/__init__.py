"""Serve stage: predictions of a model, or of a run's recommended variant, over HTTP with dynamic batching.

    config    ServeConfig, the settings, and ``check``
    model     ``inspect`` (what a path names, before loading) and ``ServedModel`` (texts -> the task's rows)
    batching  ``Batcher``: concurrent requests merged into model calls in one model thread
    metrics   the Prometheus metrics, in text format
    app       ``create_app``: the FastAPI routes (the ``serve`` extra, imported only when called)

``pretune serve`` (``pretune/cli/serve.py``) starts uvicorn with them. Importing this package loads neither
FastAPI nor torch.
"""

from .config import ServeConfig, check

__all__ = ["ServeConfig", "check"]
