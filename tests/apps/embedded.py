"""An app run through the embedding API, as gunicorn.app.base users write it."""

import sys

from ferricorn.app.base import BaseApplication


def app(environ, start_response):
    body = b"embedded"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class StandaloneApplication(BaseApplication):
    def __init__(self, application, options=None):
        self.options = options or {}
        self.application = application
        super().__init__()

    def load_config(self):
        config = {k: v for k, v in self.options.items() if k in self.cfg.settings and v is not None}
        for key, value in config.items():
            self.cfg.set(key.lower(), value)

    def load(self):
        return self.application


if __name__ == "__main__":
    StandaloneApplication(app, {"bind": "127.0.0.1:0", "workers": 2, "worker_class": sys.argv[1], "keepalive": 3}).run()
