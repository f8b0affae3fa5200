"""A Flask app for the framework tests: JSON, multipart upload, streaming, errors."""

import hashlib

from flask import Flask, Response, abort, jsonify, request, stream_with_context

app = Flask(__name__)


@app.get("/json")
def get_json():
    return jsonify(hello="world", args=request.args.to_dict())


@app.post("/json")
def post_json():
    data = request.get_json()
    return jsonify(received=data, n=len(data["items"]))


@app.post("/upload")
def upload():
    out = {}
    for name, f in request.files.items():
        blob = f.read()
        out[name] = {"filename": f.filename, "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    return jsonify(files=out, form=request.form.to_dict())


@app.get("/stream")
def stream():
    who = request.args.get("who", "nobody")

    @stream_with_context
    def gen():
        for i in range(5):
            # request is still usable while streaming thanks to stream_with_context
            yield "%d:%s:%s\n" % (i, who, request.path)

    return Response(gen(), mimetype="text/plain")


@app.get("/missing")
def missing():
    abort(404)


@app.get("/boom")
def boom():
    raise RuntimeError("flask view failed")
