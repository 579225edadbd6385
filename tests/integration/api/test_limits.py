"""What one client may hold, against a real uvicorn with small bounds: jobs queued per
token (the engine's cap, answered 429), event streams and WebSockets per token, and the
time a request body may take to arrive.

The module's only node is drained, so every job stays queued (and its stream open)."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from api.gateway.app import create_app
from api.settings import Settings
from cluster import Fleet
from cluster.ray_edge.runtime import Runtime
from tests.helpers import make_clip, serving, wait_until
from tests.integration.api.conftest import AUTH, TOKEN, Gateway
from tests.integration.conftest import start_fleet

OTHER = "another-token"
OTHER_AUTH = {"Authorization": f"Bearer {OTHER}"}
SETUP = {"Authorization": "Bearer setup-token"}
QUEUED = 2
STREAMS = 3
BODY_S = 2.0
PAGE = {"X-Framefleet-UI": "1"}


@pytest.fixture(scope="module")
def fleet(
    ray_runtime: Runtime, roots: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """This module's coordinator: conftest's, with a small queue per submitter."""
    resolved = tuple(r.resolve() for r in roots)
    f = start_fleet(tmp_path_factory.mktemp("coordinator"), "coordinator-test_limits",
                    media_roots=resolved, max_queued_jobs=QUEUED)  # fmt: skip
    yield f
    f.shutdown_coordinator()


@pytest.fixture(scope="module")
def limited(
    fleet: Fleet, roots: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    media, out = roots
    make_clip(media / "clip.mp4", seconds=1)
    settings = Settings(
        api_tokens=[TOKEN, OTHER, "setup-token"],
        media_roots=[str(media), str(out)],
        data_dir=tmp_path_factory.mktemp("gw-data"),
        max_streams_per_token=STREAMS,
        body_timeout_s=BODY_S,
    )
    with serving(create_app(settings, fleet)) as url:
        gw = Gateway(url, media, out)
        nodes = wait_until(lambda: gw.http.get("/v1/nodes").json(), timeout=60)
        drained = gw.http.post(f"/v1/nodes/{nodes[0]['address']}/drain", headers=SETUP)
        assert drained.status_code == 200, drained.text
        yield gw
        gw.http.close()


_made = iter(range(10**6))


def probe(gw: Gateway) -> dict[str, str]:
    """A transcode (a node's work: it waits while the node is drained) to a new file."""
    out = str(gw.out / f"limits-{next(_made)}.mp4")
    return {"input": str(gw.media / "clip.mp4"), "output": out, "hardware": "cpu"}


@pytest.fixture(scope="module")
def queued_job(limited: Gateway) -> str:
    """A job that stays queued (submitted by a token of its own)."""
    r = limited.http.post("/v1/jobs", json=probe(limited), headers=SETUP)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_past_its_queued_jobs_a_token_gets_429_and_others_are_unaffected(
    limited: Gateway,
) -> None:
    made = [limited.http.post("/v1/jobs", json=probe(limited)) for _ in range(QUEUED)]
    assert [r.status_code for r in made] == [201] * QUEUED
    full = limited.http.post("/v1/jobs", json=probe(limited))
    assert full.status_code == 429 and full.headers["retry-after"] == "30"
    assert full.json()["error"]["code"] == "queue_full"
    assert "\n" not in full.json()["error"]["message"]
    batch = {"inputs": [str(limited.media / "clip.mp4")], "output_dir": str(limited.out),
             "spec": {"hardware": "cpu"}}  # fmt: skip
    assert limited.http.post("/v1/jobs/batch", json=batch).status_code == 429
    # The page's session counts as its token, not as a submitter of its own.
    signed = httpx.post(f"{limited.url}/ui/session", json={"token": TOKEN}, headers=PAGE)
    cookie = {"Cookie": f"framefleet_session={signed.cookies['framefleet_session']}"}
    from_page = httpx.post(f"{limited.url}/v1/jobs", json=probe(limited), headers=PAGE | cookie)
    assert from_page.status_code == 429, from_page.text
    assert limited.http.post("/v1/jobs", json=probe(limited), headers=OTHER_AUTH).status_code == 201
    for r in made:  # room again once a job leaves the queue
        limited.http.delete(f"/v1/jobs/{r.json()['id']}")
    assert limited.http.post("/v1/jobs", json=probe(limited)).status_code == 201


class Stream:
    """One SSE request on a connection of its own, held open until :meth:`close`."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.client = httpx.Client(timeout=30)
        self.response = self.client.send(self.client.build_request("GET", url, headers=headers),
                                         stream=True)  # fmt: skip
        self.status = self.response.status_code

    def close(self) -> None:
        self.response.close()
        self.client.close()


def test_event_streams_are_capped_per_token_and_freed_when_a_client_leaves(
    limited: Gateway, queued_job: str
) -> None:
    url = f"{limited.url}/v1/jobs/{queued_job}/events"
    with contextlib.ExitStack() as held:
        mine = [Stream(url, AUTH) for _ in range(STREAMS)]
        for stream in mine:
            held.callback(stream.close)
        assert [s.status for s in mine] == [200] * STREAMS
        over = Stream(url, AUTH)
        held.callback(over.close)
        assert over.status == 429 and over.response.headers["retry-after"] == "30"
        error = json.loads(over.response.read())["error"]
        assert error["code"] == "too_busy"
        assert error["message"] == (
            f"at most {STREAMS} event streams open at once per token; close one, or raise "
            "FRAMEFLEET_MAX_STREAMS_PER_TOKEN"
        )
        theirs = Stream(url, OTHER_AUTH)  # another token: streams of its own
        held.callback(theirs.close)
        assert theirs.status == 200
        mine[0].close()  # a client goes away (no end of stream): its place is free again

        def reopened() -> Stream | None:
            again = Stream(url, AUTH)
            if again.status == 200:
                return again
            again.close()
            return None

        held.callback(wait_until(reopened, timeout=10).close)
        again = Stream(url, AUTH)
        held.callback(again.close)
        assert again.status == 429


def ready(ws: ClientConnection) -> bool:
    return bool(json.loads(ws.recv(timeout=10)) == {"type": "ready"})


def refused(ws: ClientConnection) -> str:
    """The reason a socket was closed with 1013 (try again later)."""
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    return closed.value.rcvd.reason


def test_websockets_are_capped_per_token_however_authenticated_and_freed(
    limited: Gateway,
) -> None:
    url = limited.url.replace("http://", "ws://") + "/v1/ws"
    with contextlib.ExitStack() as held:
        mine = [held.enter_context(connect(url, additional_headers=AUTH)) for _ in range(STREAMS)]
        assert all(ready(ws) for ws in mine)
        with connect(url, additional_headers=AUTH) as extra:
            assert refused(extra) == (
                f"at most {STREAMS} WebSockets open at once per token; close one, or raise "
                "FRAMEFLEET_MAX_STREAMS_PER_TOKEN"
            )
        with connect(url) as by_message:  # the token as a first message: the same token
            by_message.send(json.dumps({"token": TOKEN}))
            refused(by_message)
        signed = httpx.post(f"{limited.url}/ui/session", json={"token": TOKEN}, headers=PAGE)
        cookie = {"Cookie": f"framefleet_session={signed.cookies['framefleet_session']}"}
        with connect(url, additional_headers=cookie) as page:  # the status page: its token's
            refused(page)
        theirs = held.enter_context(connect(url, additional_headers=OTHER_AUTH))
        assert ready(theirs)
        mine[0].close()

        def reopened() -> bool:
            with contextlib.ExitStack() as attempt:
                again = attempt.enter_context(connect(url, additional_headers=AUTH))
                with contextlib.suppress(ConnectionClosed):
                    if ready(again):
                        held.enter_context(attempt.pop_all())  # kept open
                        return True
            return False

        wait_until(reopened, timeout=10)
        with connect(url, additional_headers=AUTH) as extra:
            refused(extra)


def raw_request(gw: Gateway, length: int) -> tuple[socket.socket, float]:
    """A socket that sent a POST's headers announcing ``length`` bytes of body, and when."""
    where = urlsplit(gw.url)
    sock = socket.create_connection((where.hostname, where.port), timeout=10)
    sock.sendall(
        f"POST /v1/jobs HTTP/1.1\r\nHost: {where.netloc}\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n".encode()
    )
    return sock, time.monotonic()


def answer_then_close(sock: socket.socket, trickle: bool) -> tuple[bytes, float, float]:
    """Send a byte every 0.5 s (``trickle``) until an answer comes; read it to the end of
    the connection. Returns the answer, and the seconds to it and to the close."""
    start, answer, answered = time.monotonic(), b"", None
    sock.settimeout(0.5)
    while time.monotonic() - start < 15:
        if trickle and answered is None:
            with contextlib.suppress(OSError):
                sock.sendall(b" ")
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break  # the gateway closed the connection
        answer += chunk
        answered = answered or time.monotonic() - start
    sock.close()
    return answer, answered or float("inf"), time.monotonic() - start


def test_a_body_that_trickles_in_gets_408_and_the_connection_is_closed(limited: Gateway) -> None:
    sock, _ = raw_request(limited, 1_000_000)  # 1 MB announced, then a byte every 0.5 s
    answer, answered, closed = answer_then_close(sock, trickle=True)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer[:300]
    assert BODY_S - 0.5 < answered < BODY_S + 2 and closed < BODY_S + 3
    error: dict[str, Any] = json.loads(body)["error"]
    assert error == {
        "code": "timeout",
        "message": f"the request body did not arrive within {BODY_S:g} s of its headers; "
        "send it whole",
    }


def test_an_answer_before_the_body_closes_the_connection(limited: Gateway) -> None:
    """A body refused by its announced size is not waited for either."""
    sock, _ = raw_request(limited, 50 * 1024 * 1024)  # over the 1 MiB limit: 413 at once
    answer, answered, closed = answer_then_close(sock, trickle=True)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"too_large" in answer, answer[:300]
    assert answered < 1 and closed < 2
    # An ordinary request keeps its connection.
    r = limited.http.post("/v1/jobs", json={"kind": "probe"})  # no input
    assert r.status_code == 422 and "connection" not in r.headers
