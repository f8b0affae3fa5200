"""Programmatic use of ferricorn: ``ferricorn.app.base.BaseApplication``."""
