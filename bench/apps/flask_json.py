"""flask: a small JSON endpoint through Flask's routing, request and response objects."""

from flask import Flask, jsonify

app = Flask(__name__)


@app.route("/", methods=["GET"])
def index():
    return jsonify(message="Hello, world!", items=[1, 2, 3], ok=True)
