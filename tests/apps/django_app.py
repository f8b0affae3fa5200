"""A one-file Django project: GET, POST, query strings, is_secure()."""

import json

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="test-only-not-secret",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
    # No SECURE_PROXY_SSL_HEADER: is_secure() follows wsgi.url_scheme, which
    # the server sets from X-Forwarded-Proto only for trusted proxies.
)

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402


def info(request):
    return JsonResponse(
        {
            "method": request.method,
            "query": request.GET.dict(),
            "secure": request.is_secure(),
            "scheme": request.META["wsgi.url_scheme"],
            "path": request.path,
        }
    )


@csrf_exempt
def post(request):
    if request.content_type == "application/json":
        return JsonResponse({"json": json.loads(request.body)})
    return JsonResponse({"form": request.POST.dict()})


def hello(request):
    return HttpResponse("hello from django", content_type="text/plain")


urlpatterns = [path("", hello), path("info", info), path("post", post)]

application = get_wsgi_application()
