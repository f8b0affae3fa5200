"""Thin Python helpers used by the Rust core: loading the application.

gunicorn counterpart: ``gunicorn.util.import_app``.
"""

import ast
import importlib
import os
import sys


class AppImportError(Exception):
    """The application could not be found or is not a valid WSGI callable."""


def _literal_call(expr):
    """Split ``name`` or ``name(args)`` into (name, args, kwargs) with literal arguments."""
    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError:
        raise AppImportError("Failed to parse %r as an attribute name or function call." % expr)
    if isinstance(node, ast.Name):
        return node.id, None, None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        try:
            args = [ast.literal_eval(a) for a in node.args]
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
        except ValueError:
            raise AppImportError("Failed to parse arguments as literal values: %r." % expr)
        return node.func.id, args, kwargs
    raise AppImportError("Failed to parse %r as an attribute name or function call." % expr)


def import_app(spec):
    """Import ``module[:expr]`` and return the WSGI callable.

    ``expr`` is ``name`` (default ``application``) or ``name(literal args)``,
    called to build the app as a factory.
    """
    module_name, _, expr = spec.partition(":")
    expr = expr or "application"
    name, args, kwargs = _literal_call(expr)

    try:
        module = importlib.import_module(module_name)
    except ImportError:
        if module_name.endswith(".py") and os.path.exists(module_name):
            raise ImportError(
                "Failed to find application, did you mean '%s:%s'?" % (module_name.rsplit(".", 1)[0], expr)
            )
        raise

    try:
        app = getattr(module, name)
    except AttributeError:
        raise AppImportError("Failed to find attribute %r in %r." % (name, module_name))

    if args is not None:
        try:
            app = app(*args, **kwargs)
        except TypeError as e:
            if sys.exc_info()[2].tb_next is None:
                raise AppImportError("Error in %r arguments: %s" % (name, e))
            raise

    if app is None:
        raise AppImportError("Failed to find application object: %r" % expr)
    if not callable(app):
        raise AppImportError("Application object must be callable.")
    return app
