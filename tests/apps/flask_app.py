"""A small Flask app, run under ferricorn as under gunicorn."""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/")
def index():
    return "Hello from Flask"


@app.post("/json")
def echo_json():
    data = request.get_json()
    return jsonify(received=data, method=request.method, args=request.args.to_dict())


@app.get("/fail")
def fail():
    raise RuntimeError("flask view failed")
