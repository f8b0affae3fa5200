"""Settings of the one-module Django project served through
get_asgi_application() (tests/apps/asgi_django.py)."""

DEBUG = False
SECRET_KEY = "test-only-not-secret"
ROOT_URLCONF = "asgi_django"
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
USE_TZ = True
