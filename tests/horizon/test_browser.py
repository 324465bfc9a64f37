"""TruffleBox end to end in a real headless Chromium (Debian's ``chromium`` driven by Playwright's Python
package; Playwright's own browser downloads are never used).

``ofs serve`` and ``ofs horizon`` run as subprocesses on free ports over one data directory (so they share
the SQLite registry). The first admin signs up through the first-run form (after which the sign-in page
offers no sign-up), adds alice on the Users page, alice changes her password and becomes an editor; she
requests a store, an entity and a feature group through the forms, the admin approves them in the
approval queue, values are persisted through gRPC, and the try-it page shows them.
Screenshots of each step go to ``$OFS_TEST_ARTIFACTS/trufflebox/`` (default ``.artifacts/`` in the repo).

The layout test shows every page at 1,280 and 1,920 px wide with wide data (long labels, many features,
long vectors) and checks that the page never scrolls sideways; its screenshots stay in pytest's temporary
directory (the path is printed; ``-s`` shows it).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from online_feature_store._proto import persist_pb2

if TYPE_CHECKING:
    from playwright.sync_api import Page

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("OFS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PERSIST = "/persist.FeatureService/PersistFeatures"
ADMIN_PASSWORD = "violet tractor umbrella"
ALICE_FIRST_PASSWORD = "copper kettle seashore"
ALICE_PASSWORD = "granite lantern orchard"
START_TIMEOUT = 60.0
STATIC = ROOT / "online_feature_store" / "horizon" / "static"


def test_static_assets_are_self_contained() -> None:
    """Every module the UI imports is shipped in static/, and nothing is loaded from another origin."""
    files = [p for p in STATIC.rglob("*") if p.is_file()]
    assert (STATIC / "index.html") in files
    for path in files:
        if path.suffix not in (".html", ".js", ".css", ".svg"):
            continue
        text = path.read_text(encoding="utf-8")
        urls = [
            u for u in re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text) if "w3.org/" not in u
        ]
        assert not urls, f"{path.relative_to(STATIC)} refers to another origin: {urls}"
        if path.suffix == ".js":
            # static imports and the router's lazily imported page modules
            for spec in re.findall(r'(?:from|import)\s+"(\.[^"]+)"|module: "(\.[^"]+)"', text):
                target = (path.parent / (spec[0] or spec[1])).resolve()
                assert target.is_file(), f"{path.relative_to(STATIC)} imports missing {spec[0] or spec[1]}"
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    for ref in re.findall(r'(?:src|href)="([^"#]+)"', html):
        assert (STATIC / ref).is_file(), f"index.html refers to missing {ref}"


def _unavailable(message: str) -> None:
    """Fail under CI (the browser test must run there), skip on a developer machine."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def sync_api() -> Any:
    """playwright.sync_api, once Debian's chromium and the playwright package are known to be there."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"{CHROMIUM} not found: install Debian's chromium (scripts/bootstrap does)")
    try:
        from playwright import sync_api
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[test]')")
    return sync_api


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Servers:
    """The running ``ofs serve`` (gRPC) and ``ofs horizon`` (HTTP) and where their logs are."""

    grpc_address: str
    horizon_url: str
    logs: list[Path] = field(default_factory=list)

    def log_tail(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-4000:]}" for p in self.logs)


def _spawn(args: list[str], env: dict[str, str], log: Path, stack: ExitStack) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "online_feature_store.cli", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=log.parent,
        )

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    stack.callback(stop)
    return proc


def _wait_grpc(address: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"ofs serve exited:\n{log.read_text()}"
        with grpc.insecure_channel(address) as ch:
            try:
                reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
        time.sleep(0.1)
    raise AssertionError(f"ofs serve did not start:\n{log.read_text()}")


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"ofs horizon exited:\n{log.read_text()}"
        try:
            # any HTTP answer means it is up (the API answers 401 without a session)
            with urllib.request.urlopen(f"{url}api/v1/auth/me", timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"ofs horizon did not start:\n{log.read_text()}")


@pytest.fixture
def artifacts() -> Path:
    base = Path(os.environ.get("OFS_TEST_ARTIFACTS") or ROOT / ".artifacts")
    out = base / "trufflebox"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return out


@pytest.fixture
def servers(tmp_path: Path, artifacts: Path) -> Iterator[Servers]:
    data = tmp_path / "data"
    data.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFS_")}
    env.update({"OFS_METRICS_PORT": "0", "OFS_GRACE_SECONDS": "1", "PYTHONUNBUFFERED": "1"})
    grpc_port, http_port = _free_port(), _free_port()
    serve_log, horizon_log = tmp_path / "serve.log", tmp_path / "horizon.log"
    with ExitStack() as stack:
        # ofs serve first: it creates the shared SQLite registry before Horizon opens it
        serve = _spawn(["serve", "--port", str(grpc_port), "--data-dir", str(data)], env, serve_log, stack)
        _wait_grpc(f"127.0.0.1:{grpc_port}", serve, serve_log)
        horizon_env = {**env, "OFS_HORIZON_SERVING_ADDRESS": f"127.0.0.1:{grpc_port}"}
        horizon = _spawn(
            ["horizon", "--port", str(http_port), "--data-dir", str(data)], horizon_env, horizon_log, stack
        )
        url = f"http://127.0.0.1:{http_port}/"
        _wait_http(url, horizon, horizon_log)
        srv = Servers(f"127.0.0.1:{grpc_port}", url, [serve_log, horizon_log])
        try:
            yield srv
        finally:
            stack.close()
            for log in srv.logs:
                shutil.copy(log, artifacts / log.name)


def persist(address: str, rows: dict[str, tuple[float, float]]) -> None:
    """PersistFeatures of user/activity [ctr, spend] as raw bytes, retried until ``ofs serve``'s registry
    watch has picked up the newly approved feature group."""
    query = persist_pb2.Query(
        entity_label="user",
        keys_schema=["user_id"],
        feature_group_schema=[
            persist_pb2.FeatureGroupSchema(label="activity", feature_labels=["ctr", "spend"])
        ],
        data=[
            persist_pb2.Data(
                key_values=[key],
                feature_values=[
                    persist_pb2.FeatureValues(values=persist_pb2.Values(fp32_values=list(values)))
                ],
            )
            for key, values in rows.items()
        ],
    )
    with grpc.insecure_channel(address) as ch:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = ch.unary_unary(
            PERSIST, request_serializer=None, response_deserializer=None
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                reply = call(query.SerializeToString(), timeout=10)
                break
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    assert persist_pb2.Result.FromString(reply).message == "Data Persisted Successfully"


class Shots:
    """Numbered full-page screenshots, one per step."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.n = 0

    def __call__(self, page: Page, name: str) -> None:
        self.n += 1
        page.screenshot(path=str(self.directory / f"{self.n:02d}-{name}.png"), full_page=True)


@pytest.mark.slow
def test_register_approve_persist_try(
    sync_api: Any, servers: Servers, artifacts: Path, tmp_path: Path
) -> None:
    expect = sync_api.expect
    shot = Shots(artifacts)
    page_errors: list[str] = []

    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            context.set_default_timeout(20_000)
            expect.set_options(timeout=20_000)
            # Two tabs: sessionStorage is per tab, so the admin and the editor are signed in side by side.
            admin = context.pages[0] if context.pages else context.new_page()
            editor = context.new_page()
            for page in (admin, editor):
                page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            try:
                _flow(servers, admin, editor, expect, shot)
            except BaseException:
                for name, page in (("admin", admin), ("editor", editor)):
                    page.screenshot(path=str(artifacts / f"failed-{name}.png"), full_page=True)
                print(servers.log_tail())
                raise
        finally:
            context.close()
    assert not page_errors, page_errors


def visit(page: Page, url: str) -> None:
    """Opens ``url``; reloads when the tab is already there (a same-hash goto would not re-render)."""
    if page.url == url:
        page.reload()
    else:
        page.goto(url)


def _sign_up(page: Page, expect: Any, username: str, password: str) -> None:
    form = page.locator("#register-form")
    form.get_by_label("Username").fill(username)
    form.get_by_label("Password").fill(password)
    form.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Discover", exact=True)).to_be_visible()


def _sign_in(page: Page, expect: Any, username: str, password: str) -> None:
    form = page.locator("#login-form")
    form.get_by_label("Username").fill(username)
    form.get_by_label("Password").fill(password)
    form.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Discover", exact=True)).to_be_visible()


def _submit_request(page: Page, expect: Any) -> int:
    page.get_by_role("button", name="Submit request").click()
    heading = page.locator("#result-heading")
    expect(heading).to_have_text(re.compile(r"Request #\d+ submitted"))
    return int(heading.inner_text().split("#")[1].split()[0])


def _approve(page: Page, expect: Any, request_id: int) -> None:
    card = page.locator(f"#request-{request_id}")
    expect(card).to_be_visible()
    card.get_by_role("button", name=f"Approve request {request_id}").click()
    card = page.locator(f"#request-{request_id}")
    expect(card.locator(".state")).to_have_text("APPROVED")
    expect(card.locator(".decision")).to_contain_text("registry revision")


def _flow(servers: Servers, admin: Page, editor: Page, expect: Any, shot: Shots) -> None:
    base = servers.horizon_url

    # Nobody has an account yet: the sign-in page offers to create the first one, which becomes the admin.
    visit(admin, base)
    expect(admin.get_by_role("heading", name="TruffleBox")).to_be_visible()
    expect(admin.get_by_role("heading", name="Create the first account")).to_be_visible()
    shot(admin, "login-first-run")
    _sign_up(admin, expect, "admin", ADMIN_PASSWORD)
    expect(admin.locator("#account")).to_contain_text("admin")
    expect(admin.get_by_role("link", name="Approvals")).to_be_visible()
    shot(admin, "admin-discover-empty")

    # From now on nobody can sign themselves up: the page says to ask an admin.
    visit(editor, base)
    expect(editor.locator("#no-account")).to_contain_text("Ask an admin")
    expect(editor.locator("#register-form")).to_have_count(0)
    shot(editor, "login-closed")

    # The admin adds alice on the Users page; names are unique whatever their case, passwords strong.
    visit(admin, f"{base}#/users")
    form = admin.locator("#add-user-form")
    form.get_by_label("New user's name").fill("ADMIN")
    form.get_by_label("First password").fill(ALICE_FIRST_PASSWORD)
    form.get_by_role("button", name="Add user").click()
    name = form.get_by_label("New user's name")
    expect(name).to_have_attribute("aria-invalid", "true")
    error_id = (name.get_attribute("aria-describedby") or "").split()[-1]
    expect(admin.locator(f"#{error_id}")).to_contain_text("case-insensitive")
    name.fill("alice")
    form.get_by_label("First password").fill("alice-password")
    form.get_by_role("button", name="Add user").click()
    first_password = form.get_by_label("First password")
    expect(first_password).to_have_attribute("aria-invalid", "true")
    error_id = (first_password.get_attribute("aria-describedby") or "").split()[-1]
    expect(admin.locator(f"#{error_id}")).to_contain_text("must not contain the user name")
    shot(admin, "add-user-error")
    first_password.fill(ALICE_FIRST_PASSWORD)
    form.get_by_role("button", name="Add user").click()
    expect(admin.locator("#banner")).to_contain_text("alice was added as viewer")
    expect(admin.get_by_label("Role of alice", exact=True)).to_have_value("viewer")

    # alice signs in as a viewer (no "Request a change", no "Try it") and changes her first password.
    _sign_in(editor, expect, "alice", ALICE_FIRST_PASSWORD)
    expect(editor.locator("#account .role")).to_have_text("viewer")
    expect(editor.get_by_role("link", name="Request a change")).to_have_count(0)
    expect(editor.get_by_role("link", name="Try it")).to_have_count(0)
    editor.locator("#account a.who").click()
    password_form = editor.locator("#password-form")
    password_form.get_by_label("Current password").fill(ALICE_FIRST_PASSWORD)
    password_form.get_by_label("New password").fill(ALICE_PASSWORD)
    password_form.get_by_role("button", name="Change password").click()
    expect(editor.locator("#banner")).to_contain_text("Your password was changed")
    shot(editor, "account-password")

    # The admin makes alice an editor.
    visit(admin, f"{base}#/users")
    admin.get_by_label("Role of alice", exact=True).select_option("editor")
    admin.get_by_role("button", name="Save role for alice").click()
    expect(admin.locator("#banner")).to_contain_text("alice is now editor")
    shot(admin, "users")

    # alice signs out and in again (with her new password) with her new role: try-it is open to editors.
    editor.get_by_role("button", name="Sign out").click()
    expect(editor.locator("#banner")).to_contain_text("signed out")
    _sign_in(editor, expect, "alice", ALICE_PASSWORD)
    expect(editor.locator("#account .role")).to_have_text("editor")
    expect(editor.get_by_role("link", name="Try it")).to_be_visible()

    # Requests: a SQLite store and an entity.
    editor.get_by_role("link", name="Request a change").click()
    editor.get_by_role("link", name=re.compile("^New store")).click()
    editor.get_by_label("Store id").fill("main")
    editor.get_by_label("Kind").select_option("sqlite")
    settings = editor.get_by_role("group", name="Settings")
    settings.get_by_label("Value").fill("features.db")
    editor.get_by_label("Why (shown to the approver)").fill("the embedded store")
    # a setting the store would refuse when opened is reported next to it, before any approval
    settings.get_by_role("button", name="Add setting").click()
    settings.get_by_label("Setting", exact=True).nth(1).fill("bogus")
    bogus = settings.get_by_label("Value").nth(1)
    bogus.fill("1")
    editor.get_by_role("button", name="Submit request").click()
    expect(bogus).to_have_attribute("aria-invalid", "true")
    error_id = (bogus.get_attribute("aria-describedby") or "").split()[-1]
    expect(editor.locator(f"#{error_id}")).to_contain_text("unknown sqlite setting 'bogus'")
    shot(editor, "store-setting-error")
    settings.get_by_role("button", name="Remove setting").nth(1).click()
    shot(editor, "store-form")
    store_request = _submit_request(editor, expect)
    shot(editor, "store-submitted")

    visit(editor, f"{base}#/new/create_entity")
    editor.get_by_label("Entity label").fill("user")
    editor.get_by_role("group", name="Key 1").get_by_label("Key label").fill("user_id")
    editor.get_by_role("group", name="Key 1").get_by_label("Stored column").fill("uid")
    entity_request = _submit_request(editor, expect)

    # The admin reviews the plan lines and approves both.
    visit(admin, f"{base}#/approvals")
    expect(admin.locator(f"#request-{store_request} .diff")).to_contain_text("main")
    expect(admin.locator(f"#request-{entity_request} .diff")).to_contain_text("user")
    shot(admin, "approvals-pending")
    _approve(admin, expect, store_request)
    _approve(admin, expect, entity_request)
    shot(admin, "approvals-approved")

    # A feature group with two fp32 features; a bad label is reported next to its field.
    visit(editor, f"{base}#/new/create_feature_group")
    editor.get_by_label("Entity", exact=True).select_option("user")
    editor.get_by_label("Feature group label").fill("activity")
    editor.get_by_label("Data type").select_option("fp32")
    editor.get_by_label("TTL (seconds)").fill("0")
    editor.get_by_label("Store", exact=True).fill("main")
    first = editor.get_by_role("group", name="Feature 1")
    first.get_by_label("Label", exact=True).fill("ctr")
    first.get_by_label("Default").fill("0.5")
    editor.get_by_role("button", name="Add feature").click()
    second = editor.get_by_role("group", name="Feature 2")
    second.get_by_label("Label", exact=True).fill("bad label!")
    second.get_by_label("Default").fill("-1")
    editor.get_by_role("button", name="Submit request").click()
    bad = second.get_by_label("Label", exact=True)
    expect(bad).to_have_attribute("aria-invalid", "true")
    error_id = (bad.get_attribute("aria-describedby") or "").split()[-1]
    expect(editor.locator(f"#{error_id}")).not_to_be_empty()
    expect(bad).to_be_focused()
    shot(editor, "fg-field-error")
    bad.fill("spend")
    # a default that is not a number says so in words
    first.get_by_label("Default").fill("abc")
    editor.get_by_role("button", name="Submit request").click()
    default = first.get_by_label("Default")
    expect(default).to_have_attribute("aria-invalid", "true")
    error_id = (default.get_attribute("aria-describedby") or "").split()[-1]
    expect(editor.locator(f"#{error_id}")).to_contain_text("default 'abc' is not a number for data type fp32")
    default.fill("0.5")
    fg_request = _submit_request(editor, expect)
    expect(editor.locator("#request-result .diff")).to_contain_text("activity")
    shot(editor, "fg-submitted")

    # A client with one credential for both roles (readwriter, as reference clients hold): its token is
    # shown once. The admin rejects it with a reason.
    visit(editor, f"{base}#/new/create_caller")
    editor.get_by_label("Caller id").fill("ranker")
    editor.get_by_label("Role").select_option("readwriter")
    caller_request = _submit_request(editor, expect)
    expect(editor.locator("#created-token")).not_to_be_empty()
    expect(editor.locator("#request-result")).to_contain_text("readwriter")
    shot(editor, "caller-token")

    visit(admin, f"{base}#/approvals")
    _approve(admin, expect, fg_request)
    card = admin.locator(f"#request-{caller_request}")
    reason = card.get_by_label(f"Reason for rejecting #{caller_request}")
    card.get_by_role("button", name="Reject").click()
    expect(reason).to_have_attribute("aria-invalid", "true")  # a reason is required
    reason.fill("not needed yet")
    card.get_by_role("button", name="Reject").click()
    expect(admin.locator(f"#request-{caller_request} .state")).to_have_text("REJECTED")
    shot(admin, "approvals-decided")

    # Values through the serving API's gRPC persist, read back on the try-it page.
    persist(servers.grpc_address, {"u1": (0.25, 12.5)})
    visit(editor, f"{base}#/try")
    editor.get_by_label("Entity", exact=True).select_option("user")
    editor.get_by_label("user_id (key 1)").fill("u1")
    editor.get_by_role("button", name="Add key").click()
    editor.get_by_label("user_id (key 2)").fill("u2")
    editor.get_by_role("button", name="Retrieve").click()
    table = editor.locator("#try-results")
    expect(table.locator("thead")).to_contain_text("activity.ctr")
    expect(table.locator("thead")).to_contain_text("activity.spend")
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator("th, td")).to_have_text(["u1", "0.25", "12.5"])
    expect(rows.nth(1).locator("th, td")).to_have_text(["u2", "0.5", "-1"])  # never written: defaults
    shot(editor, "try-it")

    # Discovery shows what was approved; "My requests" shows the decisions.
    visit(editor, f"{base}#/discover")
    editor.get_by_role("searchbox", name="Search").fill("spend")
    editor.get_by_role("button", name="Search").click()
    editor.get_by_role("link", name="user / activity").click()
    expect(editor.get_by_role("table")).to_contain_text("spend")
    expect(editor.locator(".detail")).to_contain_text("fp32")
    shot(editor, "discover-fg")
    visit(editor, f"{base}#/requests")
    expect(editor.locator(f"#request-{fg_request} .state")).to_have_text("APPROVED")
    expect(editor.locator(f"#request-{caller_request}")).to_contain_text("not needed yet")
    shot(editor, "my-requests")


# --- Layout: every page at two window widths, with wide data --------------------------------------------

LAYOUT_WIDTHS = (1280, 1920)
WIDE_FG = "user_engagement_signals_rolling_window_30_days"
# a feature group label as long as a label may be (128 characters, no break opportunity)
LONGEST_FG = "x" * 100 + "_longest_possible_label_here"
EMBEDDING = 32  # fp16 values per vector: one long unbroken decoded cell


def _http(url: str, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=f"{url}api/v1", headers=headers, timeout=60)


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _seed_wide_registry(url: str) -> None:
    """Through the API: the first admin, an editor, and an approved entity whose feature groups make a wide
    try-it result (long labels, many features, long vectors); one request stays pending for the
    approvals page."""
    with _http(url) as anon:
        _ok(anon.post("/auth/register", json={"username": "admin", "password": ADMIN_PASSWORD}), 201)
        admin_token = _ok(anon.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}))
        with _http(url, admin_token["token"]) as admin:
            user = {"username": "alice", "password": ALICE_PASSWORD, "role": "editor"}
            _ok(admin.post("/users", json=user), 201)
            login = {"username": "alice", "password": ALICE_PASSWORD}
            with _http(url, _ok(anon.post("/auth/login", json=login))["token"]) as editor:

                def submit(kind: str, payload: dict[str, Any], description: str = "") -> int:
                    body = {"kind": kind, "payload": payload, "description": description}
                    request_id: int = _ok(editor.post("/requests", json=body), 201)["id"]
                    return request_id

                fgs: list[dict[str, Any]] = [
                    {
                        "entity": "user",
                        "label": "embedding",
                        "data_type": "fp16vector",
                        "store": "main",
                        "features": [
                            {
                                "label": "query_vector",
                                "vector_length": EMBEDDING,
                                "default": [0.125] * EMBEDDING,
                            }
                        ],
                    },
                    {
                        "entity": "user",
                        "label": WIDE_FG,
                        "data_type": "fp32",
                        "store": "main",
                        "features": [
                            {"label": f"click_through_rate_last_30_days_bucket_{i}", "default": i / 3}
                            for i in range(12)
                        ],
                    },
                    {
                        "entity": "user",
                        "label": LONGEST_FG,
                        "data_type": "int64",
                        "store": "main",
                        "features": [{"label": "n", "default": 7}],
                    },
                ]
                requests: list[tuple[str, dict[str, Any]]] = [
                    ("create_store", {"id": "main", "kind": "sqlite", "settings": {"path": "features.db"}}),
                    ("create_entity", {"label": "user", "keys": [{"label": "user_id", "column": "uid"}]}),
                    *(("create_feature_group", fg) for fg in fgs),
                ]
                for kind, payload in requests:
                    _ok(admin.post(f"/requests/{submit(kind, payload)}/approve"))
                pending = {**fgs[1], "label": WIDE_FG + "_v2"}
                submit("create_feature_group", pending, "the same signals over 90 days " * 8)
            # ofs serve sees the approved registry through its watch; try-it answers once it does
            body = {
                "entity": "user",
                "keys_schema": ["user_id"],
                "keys": [["u1"]],
                "feature_groups": [{"label": LONGEST_FG, "feature_labels": ["n"]}],
            }
            deadline = time.monotonic() + 30
            while (r := admin.post("/try/retrieve", json=body)).status_code != 200:
                assert time.monotonic() < deadline, f"ofs serve never served the new registry: {r.text}"
                time.sleep(0.1)


# (name, hash route, heading); the try-it page is filled in separately
LAYOUT_PAGES = (
    ("discover", "#/discover", "Discover"),
    ("discover-entity", "#/discover/user", "Discover"),
    ("discover-fg-wide", f"#/discover/user/{WIDE_FG}", "Discover"),
    ("discover-fg-longest", f"#/discover/user/{LONGEST_FG}", "Discover"),
    ("new", "#/new", "Request a change"),
    ("new-fg", "#/new/create_feature_group", None),
    ("new-add-features", f"#/new/add_features?entity=user&fg={WIDE_FG}", None),
    ("requests", "#/requests", "My requests"),
    ("approvals", "#/approvals", "Approvals"),
    ("users", "#/users", "Users"),
    ("audit", "#/audit", "Audit log"),
    ("account", "#/account", "Account"),
)

_MEASURE = """() => {
  const bar = document.querySelector('header.topbar').getBoundingClientRect();
  return {scroll: document.documentElement.scrollWidth, inner: window.innerWidth, bar: Math.round(bar.right)};
}"""


def _page_ready(page: Page, expect: Any, heading: str | None) -> None:
    h1 = page.locator("main:not([aria-busy]) h1")
    expect(h1).to_be_visible()
    if heading:
        expect(h1).to_have_text(heading)
    page.wait_for_load_state("networkidle")


def _fill_try_it(page: Page, expect: Any) -> None:
    page.get_by_label("Entity", exact=True).select_option("user")
    for i in range(3):
        if i:
            page.get_by_role("button", name="Add key").click()
        page.get_by_label(f"user_id (key {i + 1})").fill(f"u{i + 1}")
    page.get_by_role("button", name="Retrieve").click()
    expect(page.locator("#try-results tbody tr")).to_have_count(3)
    expect(page.locator("#try-results thead")).to_contain_text(
        f"{WIDE_FG}.click_through_rate_last_30_days_bucket_11"
    )


@pytest.mark.slow
def test_pages_fit_the_window(
    sync_api: Any, servers: Servers, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Every page at 1,280 and 1,920 px: the page never scrolls sideways (a wide try-it result scrolls in
    its own box, the top bar spans the page, long feature group labels stay inside their cards).
    Screenshots go to pytest's temporary directory (kept for the last few runs), never into the repo."""
    expect = sync_api.expect
    shots = tmp_path_factory.mktemp("trufflebox-layout")
    print(f"screenshots: {shots}")
    _seed_wide_registry(servers.horizon_url)
    base = servers.horizon_url
    widths: dict[str, dict[str, int]] = {}
    problems: list[str] = []
    page_errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for width in LAYOUT_WIDTHS:
                context = browser.new_context(viewport={"width": width, "height": 900})
                context.set_default_timeout(20_000)
                expect.set_options(timeout=20_000)
                page = context.new_page()
                page.on("pageerror", lambda exc: page_errors.append(str(exc)))
                n = 0

                def check(name: str, page: Page = page, width: int = width) -> None:
                    nonlocal n
                    n += 1
                    page.screenshot(path=str(shots / f"{width}-{n:02d}-{name}.png"), full_page=True)
                    widths[f"{width} {name}"] = page.evaluate(_MEASURE)

                page.goto(base)
                _page_ready(page, expect, "TruffleBox")
                check("login")
                _sign_in(page, expect, "admin", ADMIN_PASSWORD)
                for name, route, heading in LAYOUT_PAGES:
                    visit(page, base + route)
                    _page_ready(page, expect, heading)
                    check(name)
                visit(page, f"{base}#/try")
                _page_ready(page, expect, "Try it")
                check("try-form")
                problems += [f"{width}: {p}" for p in _check_cards(page)]
                _fill_try_it(page, expect)
                check("try-results")
                problems += _check_results_box(page, width)
                # the columns past the window's edge, scrolled into view inside the results box
                page.locator("#try-results").evaluate("t => { t.parentElement.scrollLeft = 1e9; }")
                check("try-results-scrolled")
                context.close()
        finally:
            browser.close()
    report = "\n".join(
        f"{k}: scrollWidth {v['scroll']}, window {v['inner']}, top bar to {v['bar']}"
        for k, v in widths.items()
    )
    print(report)
    wide = {k: v for k, v in widths.items() if v["scroll"] > v["inner"]}
    assert not wide, f"pages wider than the window:\n{report}\n(screenshots in {shots})"
    short_bar = {k: v for k, v in widths.items() if v["bar"] < v["scroll"]}
    assert not short_bar, f"the top bar stops short of the page:\n{report}"
    assert not problems, "\n".join(problems)
    assert not page_errors, page_errors


def _check_cards(page: Page) -> list[str]:
    """Each feature group card of the try-it picker stays in its grid cell, its heading inside the card;
    cards side by side do not overlap. Returns what is wrong."""
    boxes = page.evaluate(
        """() => {
          const grid = document.querySelector('.fg-picks').getBoundingClientRect();
          return [...document.querySelectorAll('.fg-picks > fieldset')].map((fs) => {
            const r = fs.getBoundingClientRect(), l = fs.querySelector('legend').getBoundingClientRect();
            return {fg: fs.dataset.fg.slice(0, 20), left: r.left, right: r.right, top: r.top,
                    legendRight: l.right, gridLeft: grid.left, gridRight: grid.right};
          });
        }"""
    )
    problems = [] if len(boxes) == 3 else [f"{len(boxes)} cards, not 3"]
    for b in boxes:
        if b["left"] < b["gridLeft"] - 0.5 or b["right"] > b["gridRight"] + 0.5:
            problems.append(f"card outside the grid: {b}")
        if b["legendRight"] > b["right"] + 0.5:
            problems.append(f"heading outside its card: {b}")
    for a, b in itertools.pairwise(boxes):
        if abs(a["top"] - b["top"]) < 1 and a["right"] > b["left"] + 0.5:
            problems.append(f"cards overlap: {a} {b}")
    return problems


def _check_results_box(page: Page, width: int) -> list[str]:
    """The wide result scrolls inside its own box (so none of it is cut off). Returns what is wrong."""
    box = page.evaluate(
        """() => {
          const t = document.getElementById('try-results'), box = t.parentElement;
          const overflow = getComputedStyle(box).overflowX;
          return {overflow, scroll: box.scrollWidth, client: box.clientWidth};
        }"""
    )
    if box["overflow"] != "auto":
        return [f"{width}: the results table's box does not scroll: {box}"]
    if width == LAYOUT_WIDTHS[0] and box["scroll"] <= box["client"]:
        return [f"{width}: the wide result was expected to scroll in its box: {box}"]
    return []


# --- The API's own documentation, with no network ----------------------------------------------------------


def test_docs_page_loads_nothing_from_another_origin(make_server: Callable[..., Any]) -> None:
    """/docs refers only to Horizon's own URLs, each of which answers; there is no ReDoc page (it would
    fetch its logo from a CDN)."""
    server = make_server()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        r = client.get("/docs")
        assert r.status_code == 200, r.text
        refs = re.findall(r'(?:src|href|url)\s*[=:]\s*["\']([^"\']+)["\']', r.text)
        assert len(refs) >= 3, r.text  # the script, the style sheet, the OpenAPI document
        for ref in refs:
            assert ref.startswith("/"), f"/docs loads {ref} from another origin"
            assert client.get(ref).status_code == 200, f"/docs: {ref} is not served"
        assert client.get("/redoc").status_code == 404


def test_docs_render_offline(
    sync_api: Any, make_server: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Swagger UI (/docs) renders the API's operations in a browser that can reach nothing but
    127.0.0.1, asks no other origin for anything, and fits the window at both widths."""
    expect = sync_api.expect
    server = make_server()
    shots = tmp_path_factory.mktemp("horizon-docs")
    print(f"screenshots: {shots}")
    blocked: list[str] = []
    page_errors: list[str] = []

    def only_loopback(route: Any) -> None:
        if urllib.parse.urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for width in LAYOUT_WIDTHS:
                context = browser.new_context(viewport={"width": width, "height": 900})
                context.set_default_timeout(30_000)
                context.route("**/*", only_loopback)
                page = context.new_page()
                page.on("pageerror", lambda exc: page_errors.append(str(exc)))
                page.goto(f"{server.url}/docs")
                expect(page.locator(".swagger-ui .info .title")).to_contain_text("Horizon")
                paths = page.locator(".swagger-ui .opblock .opblock-summary-path")
                expect(paths.filter(has_text="/api/v1/auth/login")).to_be_visible()
                expect(paths.filter(has_text="/api/v1/try/retrieve")).to_be_visible()
                assert paths.count() >= 20, paths.all_inner_texts()
                # an operation opens with its parameters and responses
                page.locator(".opblock-summary", has_text="/api/v1/auth/login").click()
                expect(page.locator(".opblock.is-open .responses-table")).to_be_visible()
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(shots / f"{width}-docs.png"))
                page.screenshot(path=str(shots / f"{width}-docs-full.png"), full_page=True)
                sizes = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
                assert sizes[0] <= sizes[1], f"/docs at {width}: page {sizes[0]} px wide, window {sizes[1]}"
                context.close()
        finally:
            browser.close()
    assert not blocked, f"/docs asked another origin for {blocked}"
    assert not page_errors, page_errors
