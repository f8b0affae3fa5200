"""ferricorn: a pre-fork WSGI HTTP server, gunicorn rebuilt in Rust."""

from ferricorn._ferricorn import __version__

SERVER = "ferricorn"
version_info = tuple(int(p) for p in __version__.split(".")[:3])

__all__ = ["SERVER", "__version__", "version_info"]
