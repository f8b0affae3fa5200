"""Shadows the setproctitle package: ferricorn must then write its titles itself."""

raise ImportError("setproctitle is hidden for this test")
