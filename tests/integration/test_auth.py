"""Accounts and security through the real app (Chalice's test client) on the emulator: tokens, refresh rotation
and reuse detection, lockout, roles on every route, the static token's retirement, the audit log, secrets at
rest, and the users API."""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import jwt
import pytest
from chalice.test import Client
from jwt.warnings import InsecureKeyLengthWarning

import app as app_module
from chalicelib import aws
from chalicelib.auth import guard, tokens, users
from chalicelib.clock import utcnow
from chalicelib.jobs.queues import QUEUES
from chalicelib.models.auth import User
from chalicelib.settings import get_settings, reset_settings
from infra.local.runtime import LocalRuntime
from tests.integration.platform_fixtures import fast

Api = Callable[..., tuple[int, Any, dict[str, str]]]
PASSWORD = "Correct-Horse-Battery-9"
STATIC = {"Authorization": "Bearer local-admin-token"}


@pytest.fixture
def api(platform: Callable[..., LocalRuntime]) -> Iterator[Api]:
    platform(*(fast(q.name) for q in QUEUES), run_pollers=False)
    get_settings()  # read now: Chalice's test client sets the config file's STAGE=dev during its requests

    with Client(app_module.app) as client:

        def call(
            method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, raw: str | None = None
        ) -> tuple[int, Any, dict[str, str]]:
            hdrs = dict(headers or {})
            kwargs: dict[str, Any] = {"headers": hdrs}
            if body is not None or raw is not None:
                hdrs["Content-Type"] = "application/json"
                kwargs["body"] = raw if raw is not None else json.dumps(body)
            response = getattr(client.http, method.lower())(path, **kwargs)
            return response.status_code, json.loads(response.body) if response.body else None, dict(response.headers)

        yield call


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sign_in(api: Api, username: str, password: str = PASSWORD) -> dict[str, Any]:
    status, body, _ = api("POST", "/auth/login", {"username": username, "password": password})
    assert status == 200, body
    return body


def configure(**values: str) -> None:
    os.environ.update(values)
    reset_settings()
    get_settings()


# -- tokens -------------------------------------------------------------------------------------------------


def test_only_a_valid_access_token_of_an_enabled_user_gets_in(api: Api) -> None:
    users.create_user("alice", PASSWORD)
    pair = sign_in(api, "alice")
    assert pair["token_type"] == "bearer" and pair["expires_in"] == 15 * 60
    assert pair["user"]["username"] == "alice" and pair["user"]["role"] == "user"
    status, me, _ = api("GET", "/auth/me", headers=bearer(pair["access_token"]))
    assert status == 200 and me["username"] == "alice" and me["last_login_at"]

    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    secret = get_settings().jwt_secret.get_secret_value()  # type: ignore[union-attr]
    expired = jwt.encode({**claims, "iat": claims["iat"] - 3600, "exp": int(time.time()) - 1}, secret, "HS256")
    wrong_key = jwt.encode(claims, "not the secret, though long enough", "HS256")
    unsigned = jwt.encode(claims, None, algorithm="none")  # alg: none
    with warnings.catch_warnings():  # the same key under another algorithm: PyJWT finds it short for HS512
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        other_alg = jwt.encode(claims, secret, "HS512")
    refresh_as_access = pair["refresh_token"]
    no_type = jwt.encode({k: v for k, v in claims.items() if k != "typ"}, secret, "HS256")
    for token in (expired, wrong_key, unsigned, other_alg, refresh_as_access, no_type, "a.b.c", ""):
        status, body, _ = api("GET", "/auth/me", headers=bearer(token))
        assert status == 401 and body["error"]["code"] == "unauthorized", token
    status, body, _ = api("GET", "/auth/me", headers={"Authorization": f"Basic {pair['access_token']}"})
    assert status == 401

    # A disabled account: its valid, unexpired token stops working at once, and it cannot sign in.
    user = users.require("alice")
    users.update(user, disabled=True)
    assert api("GET", "/auth/me", headers=bearer(pair["access_token"]))[0] == 401
    status, body, _ = api("POST", "/auth/login", {"username": "alice", "password": PASSWORD})
    assert status == 401 and body["error"]["code"] == "invalid_credentials"
    assert api("POST", "/auth/refresh", {"refresh_token": pair["refresh_token"]})[0] == 401


def test_refresh_rotates_and_reusing_a_spent_token_revokes_the_family(api: Api) -> None:
    users.create_user("bob", PASSWORD)
    first = sign_in(api, "bob")
    status, second, _ = api("POST", "/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert status == 200 and second["refresh_token"] != first["refresh_token"]
    assert api("GET", "/auth/me", headers=bearer(second["access_token"]))[0] == 200
    status, third, _ = api("POST", "/auth/refresh", {"refresh_token": second["refresh_token"]})
    assert status == 200
    other_session = sign_in(api, "bob")  # another device: another family

    # The first token, spent, comes back (stolen): the whole family is revoked,
    status, body, _ = api("POST", "/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert status == 401 and "already used" in body["error"]["message"]
    # so the newest member fails too;
    status, body, _ = api("POST", "/auth/refresh", {"refresh_token": third["refresh_token"]})
    assert status == 401 and "revoked" in body["error"]["message"]
    # the other device's family is untouched.
    assert api("POST", "/auth/refresh", {"refresh_token": other_session["refresh_token"]})[0] == 200
    events = api("GET", "/admin/audit?action=auth.token_reuse", headers=STATIC)[1]["events"]
    assert [(e["actor"], e["outcome"]) for e in events] == [("bob", "failure")]


def test_logout_revokes_the_family_and_only_its_owner_can(api: Api) -> None:
    users.create_user("carol", PASSWORD)
    users.create_user("dave1", PASSWORD)
    carol, dave = sign_in(api, "carol"), sign_in(api, "dave1")
    status, _, _ = api("POST", "/auth/logout", {"refresh_token": carol["refresh_token"]}, bearer(dave["access_token"]))
    assert status == 401  # not dave's to end
    status, _, _ = api("POST", "/auth/logout", {"refresh_token": carol["refresh_token"]})
    assert status == 401  # signed in at all
    assert (
        api("POST", "/auth/logout", {"refresh_token": carol["refresh_token"]}, bearer(carol["access_token"]))[0] == 204
    )
    assert api("POST", "/auth/refresh", {"refresh_token": carol["refresh_token"]})[0] == 401
    assert api("POST", "/auth/refresh", {"refresh_token": dave["refresh_token"]})[0] == 200


def test_an_expired_refresh_token_is_refused(api: Api) -> None:
    users.create_user("erin", PASSWORD)
    user = users.require("erin")
    token = tokens.start_family(user, now=utcnow() - timedelta(days=31))
    status, body, _ = api("POST", "/auth/refresh", {"refresh_token": token})
    assert status == 401 and "expired" in body["error"]["message"]


# -- brute force --------------------------------------------------------------------------------------------


def test_failed_logins_lock_the_account_with_the_same_answers_for_unknown_users(api: Api) -> None:
    configure(LOGIN_MAX_FAILURES="3", LOGIN_LOCKOUT="600")
    users.create_user("frank", PASSWORD)
    answers = {}
    for name in ("frank", "nobody-here"):
        seen = []
        for _ in range(3):
            status, body, headers = api("POST", "/auth/login", {"username": name, "password": "Wrong-Guess-123"})
            seen.append((status, body, "Retry-After" in headers))
        status, body, headers = api("POST", "/auth/login", {"username": name, "password": PASSWORD})
        seen.append((status, body["error"]["code"], int(headers.get("Retry-After", 0)) > 500))
        answers[name] = seen
    assert answers["frank"] == answers["nobody-here"]  # nothing tells a real account from an unknown one
    assert answers["frank"][0][0] == 401 and answers["frank"][0][1]["error"]["code"] == "invalid_credentials"
    assert answers["frank"][3] == (429, "too_many_requests", True)  # locked: even the right password waits

    events = api("GET", "/admin/audit?limit=200", headers=STATIC)[1]["events"]
    logins = [(e["actor"], e["outcome"], e["details"].get("reason")) for e in events if e["action"] == "auth.login"]
    assert logins.count(("frank", "failure", "wrong password")) == 3
    assert logins.count(("nobody-here", "failure", "unknown user")) == 3
    assert ("frank", "failure", "locked") in logins
    lockouts = [e["target"] for e in events if e["action"] == "auth.lockout"]
    assert sorted(lockouts) == ["account:frank", "account:nobody-here"]

    # A success resets the count: after the lockout, two failures and a success leave the account open.
    configure(LOGIN_MAX_FAILURES="3", LOGIN_LOCKOUT="1")
    time.sleep(1.1)
    users.create_user("grace", PASSWORD)
    for _ in range(2):
        api("POST", "/auth/login", {"username": "grace", "password": "Wrong-Guess-123"})
    sign_in(api, "grace")
    api("POST", "/auth/login", {"username": "grace", "password": "Wrong-Guess-123"})
    sign_in(api, "grace")


def test_a_stale_password_hash_is_upgraded_on_login(api: Api) -> None:
    users.create_user("heidi", PASSWORD)
    old = users.require("heidi").password_hash
    assert "m=8192,t=1" in old
    configure(ARGON2_TIME_COST="2")
    sign_in(api, "heidi")
    new = users.require("heidi").password_hash
    assert new != old and "m=8192,t=2" in new and new.startswith("$argon2id$")
    sign_in(api, "heidi")  # and it still verifies


# -- authorization ------------------------------------------------------------------------------------------


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_every_route_but_the_public_ones_needs_a_token_and_admin_routes_an_admin(api: Api) -> None:
    users.create_user("ivan1", PASSWORD)
    user_token = bearer(sign_in(api, "ivan1")["access_token"])
    routes = [(path, method) for path, entries in app_module.app.routes.items() for method in entries]
    assert len(routes) >= 30 and ("/admin/users", "POST") in routes
    public = {path for path, _ in routes if path in guard.PUBLIC}
    assert public == {"/health", "/auth/login", "/auth/refresh"}
    for path, method in routes:
        if path in guard.PUBLIC:
            continue
        status, body, _ = api(method, concrete(path), {} if method in ("POST", "PATCH", "PUT") else None)
        assert status == 401 and body["error"]["code"] == "unauthorized", (method, path, status, body)
        if path.startswith("/admin"):
            status, body, _ = api(method, concrete(path), {}, user_token)
            assert status == 403 and body["error"]["code"] == "forbidden", (method, path, status)


def test_the_static_admin_token_retires_when_the_first_admin_exists(api: Api) -> None:
    assert api("GET", "/admin/tasks", headers=STATIC)[0] == 200
    status, made, _ = api("POST", "/admin/users", {"username": "root1", "password": PASSWORD, "role": "admin"}, STATIC)
    assert status == 201 and made["role"] == "admin"
    status, body, _ = api("GET", "/admin/tasks", headers=STATIC)
    assert status == 401 and "retired" in body["error"]["message"]
    admin = bearer(sign_in(api, "root1")["access_token"])
    assert api("GET", "/admin/tasks", headers=admin)[0] == 200

    # The one-time migration records the same switch on a stage whose admins predate the marker.
    from chalicelib.models.auth import Marker

    Marker(*Marker.key(users.ADMIN_EXISTS)).delete()
    assert api("GET", "/admin/tasks", headers=STATIC)[0] == 200
    result = users.RetireStaticToken().run(None)  # type: ignore[arg-type]
    assert result == {"admin": "root1", "static_token_retired": True}
    assert api("GET", "/admin/tasks", headers=STATIC)[0] == 401


def test_the_users_api_and_password_changes(api: Api) -> None:
    users.create_user("judy1", PASSWORD, role="admin")
    admin = bearer(sign_in(api, "judy1")["access_token"])
    for n in range(5):
        assert api("POST", "/admin/users", {"username": f"user{n}", "password": PASSWORD}, admin)[0] == 201
    status, body, _ = api("POST", "/admin/users", {"username": "user0", "password": PASSWORD}, admin)
    assert status == 409
    for bad, field in (
        ({"username": "Bad Name", "password": PASSWORD}, "username"),
        ({"username": "kate1", "password": "short"}, "password"),
        ({"username": "kate1", "password": "password123"}, "password"),
        ({"username": "kate1", "password": PASSWORD, "role": "root"}, "role"),
        ({"username": "kate1", "password": PASSWORD, "extra": 1}, "extra"),
    ):
        status, body, _ = api("POST", "/admin/users", bad, admin)
        assert status == 400 and body["error"]["details"]["field"] == field, (bad, body)
    assert api("POST", "/admin/users", raw="{not json", headers=admin)[0] == 400

    names, cursor = [], None
    while True:
        status, page, _ = api("GET", "/admin/users?limit=2" + (f"&cursor={cursor}" if cursor else ""), headers=admin)
        assert status == 200 and len(page["users"]) <= 2
        names += [u["username"] for u in page["users"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert names == sorted(names) and {"judy1", "user0", "user4"} <= set(names)
    assert all("password" not in json.dumps(u).lower() for u in page["users"])

    user0 = sign_in(api, "user0")
    status, changed, _ = api("PATCH", "/admin/users/user0", {"role": "admin"}, admin)
    assert status == 200 and changed["role"] == "admin"
    assert api("PATCH", "/admin/users/nobody", {"role": "admin"}, admin)[0] == 404
    assert api("PATCH", "/admin/users/judy1", {"disabled": True}, admin)[0] == 400  # not yourself

    # An admin resets a password: the old one and the tokens issued under it stop working.
    assert api("POST", "/admin/users/user1/password", {"password": "Another-Good-Phrase-7"}, admin)[0] == 204
    assert api("POST", "/auth/login", {"username": "user1", "password": PASSWORD})[0] == 401
    sign_in(api, "user1", "Another-Good-Phrase-7")

    # A user changes their own password, with the current one.
    me = bearer(user0["access_token"])
    status, body, _ = api(
        "POST", "/auth/password", {"current_password": "wrong", "new_password": "Fresh-Phrase-99"}, me
    )
    assert status == 403
    assert (
        api("POST", "/auth/password", {"current_password": PASSWORD, "new_password": "Fresh-Phrase-99"}, me)[0] == 204
    )
    assert api("GET", "/auth/me", headers=me)[0] == 401  # issued under the old password
    sign_in(api, "user0", "Fresh-Phrase-99")

    actions = [e["action"] for e in api("GET", "/admin/audit?limit=200", headers=admin)[1]["events"]]
    for expected in ("auth.role_change", "auth.password_reset", "auth.password_change", "POST /admin/users"):
        assert expected in actions, expected
    status, page, _ = api("GET", "/admin/audit?actor=judy1&action=auth.role_change", headers=admin)
    assert [e["target"] for e in page["events"]] == ["user0"]
    assert api("GET", "/admin/audit?since=yesterday", headers=admin)[0] == 400


def test_feeds_are_their_owners_and_their_keys_are_never_stored_or_shown_in_clear(api: Api) -> None:
    users.create_user("liam1", PASSWORD)
    users.create_user("mia12", PASSWORD)
    liam, mia = (bearer(sign_in(api, name)["access_token"]) for name in ("liam1", "mia12"))
    key = "s3cr3t-indexer-api-key-QZXW"
    status, feed, _ = api("POST", "/feeds", {"name": "mine", "url": "http://127.0.0.1:9/api", "api_key": key}, liam)
    assert status == 201 and feed["api_key"] == "…QZXW" and feed["owner"] == "liam1"

    raw = aws.dynamodb().get_item(
        TableName=get_settings().resource_name("sources"), Key={"pk": {"S": "FEEDS"}, "sk": {"S": f"FEED#{feed['id']}"}}
    )["Item"]
    assert key not in json.dumps(raw) and "QZXW" not in json.dumps(raw)

    assert [f["id"] for f in api("GET", "/feeds", headers=liam)[1]["feeds"]] == [feed["id"]]
    assert api("GET", "/feeds", headers=mia)[1]["feeds"] == []
    status, body, _ = api("DELETE", f"/feeds/{feed['id']}", headers=mia)
    assert status == 404 and body["error"]["code"] == "not_found"  # not 403: nothing says it exists
    assert api("DELETE", f"/feeds/{feed['id']}", headers=liam)[0] == 204
    events = api("GET", "/admin/audit?actor=liam1", headers=STATIC)[1]["events"]
    assert {e["action"] for e in events} >= {"POST /feeds", "DELETE /feeds/{feed_id}"}
    assert all(key not in json.dumps(e) for e in events)


def test_bodies_are_validated_and_oversize_ones_refused(api: Api) -> None:
    status, body, _ = api("POST", "/auth/login", {"username": "x"})
    assert status == 400 and body["error"]["details"]["field"] == "password"
    status, body, _ = api("POST", "/auth/login", {"username": 5, "password": "p"})
    assert status == 400 and body["error"]["details"]["field"] == "username"
    status, body, _ = api("POST", "/auth/login", raw="[1, 2]")
    assert status == 400
    status, body, _ = api("POST", "/auth/login", raw=json.dumps({"username": "a", "password": "x" * 70_000}))
    assert status == 413 and body["error"]["code"] == "payload_too_large"


def test_a_stream_grant_carries_the_signed_in_user(api: Api) -> None:
    from chalicelib.streams import grants

    users.create_user("nina1", PASSWORD)
    token = sign_in(api, "nina1")["access_token"]
    assert tokens.decode_access(token).username == "nina1"
    grant = grants.verify(grants.issue("ab" * 20, "nina1"))
    assert grant.user == "nina1"
    assert isinstance(User.get(*User.key("nina1")).created_at.year, int)


def test_secrets_are_envelope_encrypted_under_a_kms_key_when_one_is_set(api: Api) -> None:
    from chalicelib import secrets

    before = secrets.encrypt("old-fernet-secret-1111")  # written before the switch: still readable after it
    key_id = aws.client("kms").create_key(Description="projectionist secrets")["KeyMetadata"]["KeyId"]
    configure(SECRETS_KMS_KEY_ID=key_id)
    stored = secrets.encrypt("indexer-api-key-123456")
    assert stored.startswith("kms1.") and "indexer" not in stored and "123456" not in stored
    assert stored != secrets.encrypt("indexer-api-key-123456")  # a fresh data key and nonce each time
    assert secrets.decrypt(stored) == "indexer-api-key-123456"
    assert secrets.decrypt(before) == "old-fernet-secret-1111"
    tampered = stored[:-4] + ("AAAA" if not stored.endswith("AAAA") else "BBBB")
    with pytest.raises(secrets.SecretUnreadableError):
        secrets.decrypt(tampered)

    users.create_user("olga1", PASSWORD)
    olga = bearer(sign_in(api, "olga1")["access_token"])
    body = {"name": "kms", "url": "http://127.0.0.1:9/api", "api_key": "indexer-api-key-999999"}
    status, feed, _ = api("POST", "/feeds", body, olga)
    assert status == 201 and feed["api_key"] == "…9999"
    raw = aws.dynamodb().get_item(
        TableName=get_settings().resource_name("sources"), Key={"pk": {"S": "FEEDS"}, "sk": {"S": f"FEED#{feed['id']}"}}
    )["Item"]
    assert raw["api_key_encrypted"]["S"].startswith("kms1.") and "999999" not in json.dumps(raw)


def b64(value: Any) -> str:
    import base64

    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


def test_forged_cursors_and_odd_parameters_are_400s_never_500s(api: Api) -> None:
    # (found by a schemathesis helper's probes: each of these was a 500, or a walk over millions of days)
    from chalicelib.catalog import read
    from chalicelib.errors import ValidationError

    cases = [
        "/admin/users?cursor=" + b64({"bad": {"S": "x"}}),
        "/admin/users?cursor=" + b64(["not", "an", "object"]),
        "/admin/audit?cursor=" + b64({"d": "9999-12-31", "k": None}),
        "/admin/audit?cursor=" + b64({"d": utcnow().date().isoformat(), "k": {"pk": {"N": "1"}}}),
        "/admin/runs?cursor=" + b64({"p": "x"}),
        "/admin/runs?cursor=" + b64({"p": 0, "k": {"whatever": {"S": "x"}}}),
        "/search?q=" + "a" * 300,
    ]
    for path in cases:
        status, body, _ = api("GET", path, headers=STATIC)
        assert status == 400 and body["error"]["code"] == "invalid_request", (path, status, body)
    status, body, _ = api("GET", "/admin/runs?until=0001-01-01T00:00:00Z", headers=STATIC)
    assert status == 200 and body["runs"] == [], body
    assert api("GET", "/admin/jobs/" + "j" * 3000, headers=STATIC)[0] == 404
    assert api("GET", "/search?q=" + "z" * 150, headers=STATIC)[0] == 200
    for raw in ("²", "①", "12x"):
        with pytest.raises(ValidationError):
            read.media_id(raw)
