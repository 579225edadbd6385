"""/docs in a real browser: Swagger UI served by the gateway itself (pinned, vendored),
under the status page's Content-Security-Policy, with every other host blocked; the API
tried from the page with a token given to Authorize."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Route, expect, sync_playwright

from api.gateway.app import create_app
from api.settings import Settings
from cluster import Fleet
from tests.helpers import serving
from tests.integration.api.conftest import TOKEN

VENDOR = Path(__file__).parents[3] / "api" / "gateway" / "ui" / "vendor"


@pytest.fixture(scope="module")
def docs_gateway(
    fleet: Fleet, roots: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    settings = Settings(api_tokens=[TOKEN], media_roots=[str(r) for r in roots],
                        data_dir=tmp_path_factory.mktemp("gw-data"))  # fmt: skip
    with serving(create_app(settings, fleet)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make setup` installs it"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True)
        yield b
        b.close()


def test_docs_come_from_the_gateway_alone_under_a_strict_policy(docs_gateway: str) -> None:
    plain = httpx.Client(base_url=docs_gateway, timeout=30)
    page = plain.get("/docs")
    csp = page.headers["content-security-policy"]
    assert page.status_code == 200 and "default-src 'none'" in csp and "script-src 'self';" in csp
    assert "connect-src 'self';" in csp and "img-src 'self' data:;" in csp  # Swagger's icons
    assert "unsafe" not in csp and "http" not in csp and "*" not in csp
    assert "<script>" not in page.text and "cdn" not in page.text
    bundle = plain.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.content == (VENDOR / "swagger-ui-bundle.js").read_bytes()
    assert bundle.headers["content-security-policy"] == csp
    assert plain.get("/docs/assets/nothing.js").status_code == 404
    assert plain.get("/redoc").status_code == 404  # dropped rather than loaded from a CDN
    schema = plain.get("/openapi.json").json()
    assert "/v1/jobs" in schema["paths"] and "token" in schema["components"]["securitySchemes"]
    plain.close()


def test_docs_list_the_api_and_try_it_with_a_token_with_no_other_host(
    docs_gateway: str, browser: Browser
) -> None:
    gateway = urlsplit(docs_gateway).netloc
    elsewhere: list[str] = []
    problems: list[str] = []

    def only_the_gateway(route: Route) -> None:
        if urlsplit(route.request.url).netloc == gateway:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(message.text)

    context = browser.new_context()
    context.route("**/*", only_the_gateway)
    page = context.new_page()
    page.on("console", console)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.goto(f"{docs_gateway}/docs")
    jobs = page.locator("#operations-jobs-list_jobs_v1_jobs_get")
    expect(jobs).to_be_visible()
    expect(page.locator(".opblock-summary-path[data-path='/v1/jobs/batch']")).to_be_visible()

    page.get_by_role("button", name="Authorize").first.click()
    page.get_by_label("auth-bearer-value").fill(TOKEN)
    page.get_by_role("button", name="Apply credentials").click()
    page.locator(".auth-btn-wrapper").get_by_role("button", name="Close").click()
    jobs.locator(".opblock-summary").click()
    jobs.get_by_role("button", name="Try it out").click()
    jobs.get_by_role("button", name="Execute").click()
    status = jobs.locator(".live-responses-table .response .response-col_status")
    expect(status).to_have_text("200")
    context.close()
    assert elsewhere == []
    assert problems == []
