"""sse-offload: a Server-Sent Events gateway on Twisted, fed by Redis pub/sub."""

__version__ = "0.1.0"
