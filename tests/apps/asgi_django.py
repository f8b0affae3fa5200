"""Django async (and sync) views through get_asgi_application(), as a
project's asgi.py serves them (settings: tests/apps/asgi_django_settings.py)."""

import asyncio
import hashlib
import json
import os
import threading

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asgi_django_settings")

from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402


async def hello(request):
    return HttpResponse("hello from django async", content_type="text/plain")


async def info(request):
    return JsonResponse({
        "method": request.method,
        "path": request.path,
        "query": request.GET.dict(),
        "scheme": request.scheme,
        "secure": request.is_secure(),
        "host": request.get_host(),
        "server_port": request.META.get("SERVER_PORT"),
        "remote_addr": request.META.get("REMOTE_ADDR"),
        "agent": request.headers.get("User-Agent"),
    })


@csrf_exempt
async def post(request):
    if request.content_type == "application/json":
        return JsonResponse({"json": json.loads(request.body)})
    return JsonResponse({"form": request.POST.dict(), "size": len(request.body)})


@csrf_exempt
async def upload(request):
    files = {
        name: {"name": f.name, "size": f.size, "sha256": hashlib.sha256(f.read()).hexdigest()}
        for name, f in request.FILES.items()
    }
    return JsonResponse({"files": files, "fields": request.POST.dict()})


async def sleepy(request):
    await asyncio.sleep(float(request.GET.get("s", "0.3")))
    return HttpResponse("rested")


async def stream(request):
    async def gen():
        for i in range(int(request.GET.get("n", "3"))):
            await asyncio.sleep(0)
            yield "chunk %d\n" % i

    return StreamingHttpResponse(gen(), content_type="text/plain")


def sync_view(request):
    # A plain view: Django runs it in a thread through sync_to_async.
    return JsonResponse({"in_thread": threading.current_thread() is not threading.main_thread()})


urlpatterns = [
    path("", hello),
    path("info", info),
    path("post", post),
    path("upload", upload),
    path("sleep", sleepy),
    path("stream", stream),
    path("sync", sync_view),
]

application = get_asgi_application()
