"""Reference answers from gunicorn 27.0.1 for tests/test_config.py.

Run as a subprocess (gunicorn reads some defaults from the environment when
it is imported, and changes directory while loading): reads a JSON list of
cases ``{"argv": [...], "env": {...}}`` on stdin and writes, per case, either
``{"ok": <Config.__str__ text>}`` or ``{"error": <stderr>, "code": <exit code>}``.
"""

import contextlib
import io
import json
import os
import sys


def main():
    cases = json.load(sys.stdin)
    base_env = dict(os.environ)
    home = os.getcwd()
    from gunicorn.app.wsgiapp import WSGIApplication

    results = []
    for case in cases:
        os.environ.clear()
        os.environ.update(base_env)
        os.environ.update(case.get("env", {}))
        os.chdir(home)
        sys.argv = ["gunicorn", *case["argv"]]
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                app = WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]", prog="gunicorn")
            results.append({"ok": str(app.cfg)})
        except SystemExit as e:
            results.append({"error": err.getvalue(), "code": e.code})
    os.chdir(home)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
