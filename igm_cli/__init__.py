"""igm: a command-line experiment runner for implicit generative models."""

__version__ = "0.1.0"
