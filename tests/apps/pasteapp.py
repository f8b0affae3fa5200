"""A PasteDeploy app factory for the --paste tests."""


def make_app(global_conf, greeting="hello"):
    extra = global_conf.get("extra", "-")

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [("%s %s" % (greeting, extra)).encode()]

    return app
