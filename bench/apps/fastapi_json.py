"""FastAPI: the same small JSON object as the Flask app (flask_json.py)."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def index():
    return {"message": "Hello, world!", "items": [1, 2, 3], "ok": True}
