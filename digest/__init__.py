"""digest: daily arXiv digests by email, one per subscriber, only new papers."""

__version__ = "0.1.0"
