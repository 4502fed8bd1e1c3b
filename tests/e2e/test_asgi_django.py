"""Django 3.2 (Debian's python3-django) as an ASGI application
(django.core.asgi.get_asgi_application, settings configured in the module): views with path
params, JSON responses, a POST form, redirects, sync and async views, and the same app on a
prefix route (reverse() and build_absolute_uri() must include the prefix). Django 3.2 does
not support the lifespan protocol (it raises on it): coil must still serve it."""

import pytest

from asgi_support import asgi_manifest, module_server
from conftest import manifest

DJANGO_APP = r'''
import asyncio, os

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="coil-e2e-not-secret",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    USE_TZ=True,
)

from django.core.asgi import get_asgi_application
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import path, reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST


def hello(request, name):
    return HttpResponse(f"Hello, {name}!", content_type="text/plain; charset=utf-8")


def item(request, item_id):
    return JsonResponse({
        "item_id": item_id,
        "q": request.GET.get("q"),
        "tags": request.GET.getlist("tag"),
        "method": request.method,
        "path": request.path,
        "path_info": request.path_info,
        "script_name": request.META.get("SCRIPT_NAME"),
        "reverse": reverse("item", args=[item_id]),
        "absolute": request.build_absolute_uri(),
        "user_agent": request.headers.get("User-Agent"),
        "cookie": request.COOKIES.get("flavour"),
    })


@csrf_exempt
@require_POST
def submit(request):
    resp = JsonResponse({"name": request.POST.get("name"), "colors": request.POST.getlist("color")},
                        status=201)
    resp.set_cookie("submitted", "yes")
    return resp


def old(request, item_id):
    return redirect("item", item_id=item_id)


def permanent(request):
    return redirect("/hello/world/", permanent=True)


async def async_view(request):
    await asyncio.sleep(0)
    return JsonResponse({"async": True, "pid": os.getpid()})


urlpatterns = [
    path("hello/<str:name>/", hello, name="hello"),
    path("items/<int:item_id>/", item, name="item"),
    path("submit/", submit, name="submit"),
    path("old/<int:item_id>/", old),
    path("permanent/", permanent),
    path("async/", async_view),
]

application = get_asgi_application()
'''

FILES = {
    "coil.toml": manifest(asgi_manifest("dj", "/...", entrypoint="djapp:application"),
                          asgi_manifest("djsub", "/site/...", entrypoint="djapp:application")),
    "djapp.py": DJANGO_APP,
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    yield from module_server(tmp_path_factory, FILES, name="django")


@pytest.fixture
def c(srv):
    return srv.coil


def host(c):
    return f"127.0.0.1:{c.port}"


def test_view_with_path_param(c):
    r = c.get("/hello/coil/")
    assert r.status == 200, r
    assert r.body == b"Hello, coil!"
    assert r.header("content-type") == "text/plain; charset=utf-8"
    r = c.get("/hello/caf%C3%A9/")
    assert r.status == 200 and r.body == "Hello, caf\u00e9!".encode(), r


def test_json_response_with_query_headers_and_cookies(c):
    r = c.get("/items/42/?q=find%20me&tag=a&tag=b",
              headers={"User-Agent": "coil-e2e", "Cookie": "flavour=vanilla; x=y"})
    assert r.status == 200, r
    assert r.header("content-type") == "application/json"
    d = r.json()
    assert d["item_id"] == 42
    assert d["q"] == "find me" and d["tags"] == ["a", "b"]
    assert d["path"] == "/items/42/"
    assert d["reverse"] == "/items/42/"
    assert d["absolute"] == f"http://{host(c)}/items/42/?q=find%20me&tag=a&tag=b"
    assert d["user_agent"] == "coil-e2e"
    assert d["cookie"] == "vanilla"


def test_post_form(c):
    r = c.request("POST", "/submit/", body=b"name=Ada+Lovelace&color=red&color=blue",
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 201, r
    assert r.json() == {"name": "Ada Lovelace", "colors": ["red", "blue"]}
    assert any(v.startswith("submitted=yes") for v in r.headers_all("set-cookie")), r.header_list
    r = c.get("/submit/")
    assert r.status == 405, r


def test_multipart_form(c):
    boundary = "djboundary1234"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nGrace\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"color\"\r\n\r\ngreen\r\n"
            f"--{boundary}--\r\n").encode()
    r = c.request("POST", "/submit/", body=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status == 201, r
    assert r.json() == {"name": "Grace", "colors": ["green"]}


def test_redirects(c):
    r = c.get("/old/9/")
    assert r.status == 302, r
    assert r.header("location") == "/items/9/"
    r = c.get("/permanent/")
    assert r.status == 301 and r.header("location") == "/hello/world/", r
    # CommonMiddleware's APPEND_SLASH
    r = c.get("/hello/coil")
    assert r.status == 301 and r.header("location") == "/hello/coil/", r


def test_not_found_and_async_view(c):
    assert c.get("/nothing/here/").status == 404
    r = c.get("/async/")
    assert r.status == 200 and r.json()["async"] is True, r


def test_mounted_under_prefix(c):
    d = c.get("/site/items/5/?q=1").json()
    assert d["item_id"] == 5
    assert d["path"] == "/site/items/5/"
    assert d["path_info"] == "/items/5/"
    assert d["script_name"] == "/site"
    assert d["reverse"] == "/site/items/5/"
    assert d["absolute"] == f"http://{host(c)}/site/items/5/?q=1"
    r = c.get("/site/old/3/")
    assert r.status == 302 and r.header("location") == "/site/items/3/", r
    r = c.get("/site/hello/x/")
    assert r.status == 200 and r.body == b"Hello, x!", r
    r = c.request("POST", "/site/submit/", body=b"name=n", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 201 and r.json()["name"] == "n", r
