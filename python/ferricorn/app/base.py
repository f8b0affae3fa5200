"""Embedding API: run ferricorn from Python, the way ``gunicorn.app.base``
subclasses are written.

Subclass :class:`BaseApplication`, set settings in ``load_config()`` with
``self.cfg.set(name, value)``, return the WSGI callable from ``load()``, and
call ``run()``::

    from ferricorn.app.base import BaseApplication

    class StandaloneApplication(BaseApplication):
        def __init__(self, app, options=None):
            self.options = options or {}
            self.application = app
            super().__init__()

        def load_config(self):
            for key, value in self.options.items():
                if key in self.cfg.settings and value is not None:
                    self.cfg.set(key.lower(), value)

        def load(self):
            return self.application

    StandaloneApplication(app, {"bind": "127.0.0.1:8080", "workers": 2}).run()

``run()`` hands the settings to the same Rust core the command line uses and
does not return: it exits the process with the server's exit code. ``load()``
runs in each worker after the fork, or once in the master with
``preload_app``. The command line of the process (``sys.argv``) is not read.

gunicorn counterpart: ``gunicorn/app/base.py`` (``BaseApplication``).
"""

import sys

from ferricorn import _config, _ferricorn

# The application being run by this process (inherited by forked workers).
_CURRENT = None


class Setting:
    """One entry of ``Config.settings``: a setting's name and current value."""

    def __init__(self, name, flags, action, supported):
        self.name = name
        self.cli = list(flags)
        self.action = action
        self.supported = supported
        self.value = None

    def get(self):
        return self.value


class Config:
    """The settings an embedding application sets; names as in gunicorn."""

    def __init__(self, usage=None, prog=None):
        self.usage = usage
        self.prog = prog
        self.settings = {
            name: Setting(name, flags, action, supported) for name, flags, action, supported in _ferricorn._settings()
        }
        self._set = []

    def set(self, name, value):
        if name not in self.settings:
            raise AttributeError("No configuration setting for: %s" % name)
        self.settings[name].value = value
        if name not in self._set:
            self._set.append(name)

    def __getattr__(self, name):
        settings = self.__dict__.get("settings", {})
        if name in settings:
            return settings[name].value
        raise AttributeError("No configuration setting for: %s" % name)

    def to_argv(self):
        """The settings that were set, as command-line arguments."""
        argv = []
        for name in self._set:
            s = self.settings[name]
            value = s.value
            if name == "wsgi_app":
                raise ValueError("wsgi_app cannot be set on an embedded application: load() returns the app")
            if name in _ferricorn._HOOK_NAMES:
                continue  # passed by `hooks()`, not on the command line
            if not s.cli:
                raise ValueError("setting %r cannot be set through ferricorn.app.base yet (it has no command-line form)" % name)
            flag = next((f for f in s.cli if f.startswith("--")), s.cli[0])
            if s.action == "store_true":
                if value:
                    argv.append(flag)
            elif s.action == "store_false":
                if not value:
                    argv.append(flag)
            elif s.action == "append":
                values = [value] if isinstance(value, str) else list(value)
                for v in values:
                    argv += [flag, str(v)]
            else:
                if isinstance(value, bool):
                    value = "true" if value else "false"
                argv += [flag, str(value)]
        return argv

    def hooks(self):
        """The server hooks that were set, by name."""
        return {name: self.settings[name].value for name in self._set if name in _ferricorn._HOOK_NAMES}


def _embedded():
    """The app spec ``ferricorn.app.base:_embedded()`` resolves to the running application."""
    if _CURRENT is None:
        raise RuntimeError("no ferricorn.app.base.BaseApplication is running")
    return _CURRENT.wsgi()


class BaseApplication:
    """Base class for applications that configure and run ferricorn from Python."""

    def __init__(self, usage=None, prog=None):
        self.usage = usage
        self.prog = prog
        self.cfg = None
        self.callable = None
        self.logger = None
        self.do_load_config()

    def do_load_config(self):
        self.load_default_config()
        self.load_config()

    def load_default_config(self):
        self.cfg = Config(self.usage, prog=self.prog)

    def init(self, parser, opts, args):
        raise NotImplementedError

    def load_config(self):
        raise NotImplementedError

    def load(self):
        raise NotImplementedError

    def reload(self):
        self.do_load_config()

    def wsgi(self):
        if self.callable is None:
            self.callable = self.load()
        return self.callable

    def run(self):
        global _CURRENT
        _CURRENT = self
        argv = [self.prog or "ferricorn", *self.cfg.to_argv(), "ferricorn.app.base:_embedded()"]
        _config.EMBEDDED_HOOKS.clear()
        _config.EMBEDDED_HOOKS.update(self.cfg.hooks())
        sys.exit(_ferricorn.run(argv))
