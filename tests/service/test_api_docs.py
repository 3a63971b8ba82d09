"""No page of a running server loads anything from another host (issue 19: /docs was Swagger UI from a CDN,
a blank page offline), and the OpenAPI document is public: unsigned, with no console route and no path
of the server in it (docs/service.md, "The OpenAPI document")."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import pytest

# What a page makes the browser fetch by itself: scripts, style sheets, images, icons (not links a person follows).
ASSET = re.compile(r"<(?:script|link|img)\b[^>]*?\b(?:src|href)=[\"']([^\"']+)[\"']", re.IGNORECASE)


def get(service, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(service.endpoint + path, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture
def sqlite_service(backend, request):
    if backend == "postgresql":  # CI time: nothing here reads the database
        pytest.skip("runs on SQLite only")
    return request.getfixturevalue("service")


@pytest.mark.parametrize("path", ["/docs", "/docs/oauth2-redirect", "/redoc"])
def test_the_cdn_api_pages_are_off(sqlite_service, path):
    status, body = get(sqlite_service, path)
    assert status == 404, (path, body[:300])
    assert "cdn.jsdelivr.net" not in body and "https://" not in body


def test_the_console_pages_load_their_assets_from_the_server_itself(sqlite_service):
    status, body = get(sqlite_service, "/console/login")
    assert status == 200
    assets = ASSET.findall(body)
    assert assets, "the login page loads its style sheet and scripts"
    for url in assets:
        assert url.startswith("/") and not url.startswith("//"), f"/console/login loads {url} from another host"
        assert get(sqlite_service, url)[0] == 200, url


def test_the_openapi_document_is_public_and_holds_only_the_api(sqlite_service):
    status, body = get(sqlite_service, "/openapi.json")  # no signature, no session
    assert status == 200
    document = json.loads(body)
    assert "/20231130/models" in document["paths"] and "/openai/v1/chat/completions" in document["paths"]
    assert not [p for p in document["paths"] if p == "/" or p.startswith("/console")]
    assert str(sqlite_service.data_dir) not in body and str(sqlite_service.weights) not in body
