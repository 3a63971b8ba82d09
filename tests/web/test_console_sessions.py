"""Console sign-in and sessions through FastAPI's TestClient: a session lives on the server, so
signing out, removing a console user or an API key, or a new password ends it (a replayed cookie
is refused); a key sign-in's challenge works once; the login page shows only fixed texts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

import pytest
from helpers.console import PASSWORD, csrf_of

from tuneforge.web.session import COOKIE

KEY_TENANCY, KEY_USER = "ocid1.tenancy.oc1..aaaakeyholder", "ocid1.user.oc1..aaaakeyuser"


def test_wrong_password_is_refused_and_right_one_signs_in(anonymous):
    refused = anonymous.login("alice", "not the password")
    assert refused.status_code == 303 and refused.headers["location"] == "/console/login?next=%2F&error=wrong-password"
    assert "Wrong username or password." in anonymous.client.get(refused.headers["location"]).text
    assert anonymous.client.get("/", follow_redirects=False).status_code == 303
    assert anonymous.login("nobody").status_code == 303
    assert anonymous.login("alice").headers["location"] == "/"
    page = anonymous.client.get("/")
    assert page.status_code == 200 and "Custom models" in page.text
    assert "cohere.command-r-16k" in page.text and "deprecated" in page.text  # base models, deprecated marked


def test_login_page_shows_no_text_from_the_url(anonymous):
    for error in ("<script>alert(1)</script>", "Your account is locked: call +1 555 0100", "wrong-password-x"):
        page = anonymous.client.get("/console/login", params={"error": error}).text
        assert 'id="login-error"' not in page and "alert(1)" not in page and "555 0100" not in page


def test_login_redirect_stays_on_this_server(anonymous):
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil"):
        anonymous.client.cookies.clear()
        token = anonymous.csrf("/console/login")
        form = {"csrf": token, "username": "alice", "password": PASSWORD, "next": target}
        assert anonymous.client.post("/console/login", data=form, follow_redirects=False).headers["location"] == "/"


def test_sign_out_ends_the_session_on_the_server(alice):
    copied = alice.client.cookies.get(COOKIE)
    assert alice.client.post("/console/logout", data={"csrf": alice.csrf()}, follow_redirects=False).status_code == 303
    assert alice.client.get("/", follow_redirects=False).status_code == 303
    alice.client.cookies.clear()
    alice.client.cookies.set(COOKIE, copied)  # the cookie as it was before signing out, replayed
    replayed = alice.client.get("/", follow_redirects=False)
    assert replayed.status_code == 303 and "error=session-ended" in replayed.headers["location"]
    assert not list((alice.data_dir / "console" / "sessions").iterdir())


def test_removed_user_loses_the_session(alice, console_app):
    from tuneforge.web.users import add_user, remove_user

    assert alice.client.get("/", follow_redirects=False).status_code == 200
    remove_user(alice.data_dir, "alice")
    assert "error=session-ended" in alice.client.get("/", follow_redirects=False).headers["location"]
    assert alice.client.get("/console/api/models/x/live").status_code == 401
    add_user(alice.data_dir, "ocid1.tenancy.oc1..aaaaconsolea", "alice", PASSWORD)
    assert alice.login("alice").status_code == 303 and alice.client.get("/", follow_redirects=False).status_code == 200
    add_user(alice.data_dir, "ocid1.tenancy.oc1..aaaaconsolea", "alice", "a new password")  # a new password ends it too
    assert alice.client.get("/", follow_redirects=False).status_code == 303


def test_forged_cookie_is_not_a_session(anonymous):
    anonymous.client.cookies.set(COOKIE, "eyJ0ZW5hbmN5IjoieCJ9.forged")
    assert anonymous.client.get("/", follow_redirects=False).status_code == 303


# ---- API-key sign-in ------------------------------------------------------------------------


@pytest.fixture
def key(console_app):
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def register(console_app, key) -> str:
    from cryptography.hazmat.primitives import serialization

    from tuneforge.services.resources.keys import add_key

    app, _ = console_app
    with app.state.services.sessions() as db:
        row = add_key(
            db,
            KEY_TENANCY,
            KEY_USER,
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        )
        db.commit()
        return row.key_id


def key_form(console, key, challenge: str | None = None) -> dict:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    page = console.client.get("/console/login").text
    challenge = challenge or re.search(r'name="challenge" value="([^"]+)"', page).group(1)
    signature = base64.b64encode(key.sign(challenge.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()
    return {"csrf": csrf_of(page), "method": "api-key", "challenge": challenge, "signature": signature, "next": "/"}


def post_login(console, form: dict) -> str:
    return console.client.post("/console/login", data=form, follow_redirects=False).headers["location"]


def test_sign_in_with_a_registered_api_key(anonymous, console_app, key):
    form = key_form(anonymous, key)
    refused = post_login(anonymous, form)
    assert refused.endswith("error=key-unknown")
    assert "it is not registered" in anonymous.client.get(refused).text
    register(console_app, key)
    assert post_login(anonymous, form) == "/"
    assert KEY_USER in anonymous.client.get("/").text
    tampered = {**form, "challenge": form["challenge"].replace("login.", "login.1", 1), "csrf": anonymous.csrf()}
    assert post_login(anonymous, tampered).endswith("error=key-page")


def test_a_challenge_signs_in_once(anonymous, console_app, key):
    register(console_app, key)
    form = key_form(anonymous, key)
    assert post_login(anonymous, form) == "/"
    anonymous.client.post("/console/logout", data={"csrf": anonymous.csrf()})
    replayed = {**form, "csrf": anonymous.csrf("/console/login")}
    assert post_login(anonymous, replayed).endswith("error=key-used")
    assert anonymous.client.get("/", follow_redirects=False).status_code == 303


def test_an_expired_challenge_is_refused(anonymous, console_app, key):
    from tuneforge.web.users import CHALLENGE_TTL_S

    _app, data_dir = console_app
    register(console_app, key)
    anonymous.client.get("/console/login")  # the server's signing key exists once it has issued a page
    secret = (data_dir / "console" / "secret.key").read_bytes()
    body = f"tuneforge-console-login.{int(time.time()) - CHALLENGE_TTL_S - 5}.oldnonce"
    old = f"{body}.{hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()[:32]}"
    assert post_login(anonymous, key_form(anonymous, key, old)).endswith("error=key-expired")
    assert post_login(anonymous, {**key_form(anonymous, key), "signature": "not base64!"}).endswith("error=key-signature")


def test_a_removed_api_key_ends_its_sessions(anonymous, console_app, key):
    from tuneforge.services.resources.keys import remove_key

    key_id = register(console_app, key)
    assert post_login(anonymous, key_form(anonymous, key)) == "/"
    assert anonymous.client.get("/", follow_redirects=False).status_code == 200
    app, _ = console_app
    with app.state.services.sessions() as db:
        assert remove_key(db, key_id) == 1
        db.commit()
    assert "error=session-ended" in anonymous.client.get("/", follow_redirects=False).headers["location"]


def test_servers_sharing_a_data_dir_share_sessions(alice, console_app):
    """A second server on the same data dir and database accepts the session, and a sign-out on
    either ends it on both."""
    from fastapi.testclient import TestClient

    from tuneforge.api.app import create_app

    app, _ = console_app
    other = TestClient(create_app(app.state.services))
    other.cookies.set(COOKIE, alice.client.cookies.get(COOKIE))
    assert other.get("/", follow_redirects=False).status_code == 200
    assert other.post("/console/logout", data={"csrf": csrf_of(other.get("/").text)}, follow_redirects=False).status_code == 303
    assert alice.client.get("/", follow_redirects=False).status_code == 303
