"""mochi: turn a project's own repository into a small language model that knows it."""

__version__ = "0.1.0"
