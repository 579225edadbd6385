"""Webhooks: a job's ending POSTed, signed, to its ``callback_url``, from a persisted outbox.

The delivery is written to SQLite in the same transaction as the ending
(:meth:`~cluster.control.records.jobtable.JobTable.move`), so no crash between the two can lose
it, and a restarted coordinator goes on with what its outbox holds. Each attempt is
recorded on the job (``job.webhook``). A delivery succeeds on any 2xx answer; anything
else (another status, a refused connection, no answer within 10 s) is tried again after
``webhook_backoff_s``, doubling up to an hour, and given up after ``webhook_attempts``
(the job says so). Redirects are not followed. Receivers may see a delivery twice (an
answer lost on the way): ``X-Framefleet-Delivery`` is the same on every try of one.

The signature is Stripe's scheme, so receivers know it::

    X-Framefleet-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">

keyed with ``FRAMEFLEET_WEBHOOK_SECRET``. A receiver recomputes it over the raw body
(:func:`verify_webhook`) and refuses a ``t`` far from its clock (a replay).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cluster.config import CoordinatorConfig
from cluster.control.records.store import Delivery, JobStore
from cluster.model.jobs import Job, WebhookAttempt, WebhookState
from cluster.model.public import job_view

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("framefleet.coordinator.records")

SIGNATURE_HEADER = "X-Framefleet-Signature"
DELIVERY_HEADER = "X-Framefleet-Delivery"
EVENT_HEADER = "X-Framefleet-Event"
MAX_BACKOFF_S = 3600.0
TIMEOUT_S = 10.0
CONCURRENCY = 16
"""Deliveries in flight at once (a slow receiver holds one slot, not the loop)."""
KEEP_ATTEMPTS = 20
"""Attempts kept on the job (the newest)."""


def sign_webhook(secret: str, body: bytes, t: int) -> str:
    """The ``X-Framefleet-Signature`` value for ``body`` sent at ``t`` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify_webhook(
    secret: str, body: bytes, header: str, *, now: float | None = None, tolerance_s: float = 300
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` and its ``t`` is within
    ``tolerance_s`` of ``now`` (what a receiver runs; constant-time)."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        t = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    expected = sign_webhook(secret, body, t).partition(",v1=")[2]
    return any(hmac.compare_digest(expected, v) for v in fields.get("v1", ()))


def backoff(attempts: int, base_s: float) -> float:
    """Seconds before the next try after ``attempts`` failed ones."""
    return float(min(base_s * 2 ** max(attempts - 1, 0), MAX_BACKOFF_S))


def webhook_body(job: Job) -> bytes:
    """What is POSTed: the job's view as the API shows it, less its delivery record."""
    view = job_view(job)
    del view["webhook"]
    return json.dumps(view, separators=(",", ":")).encode()


def webhook_settings(config: CoordinatorConfig) -> dict[str, Any]:
    """:class:`Webhooks`' keyword arguments from the coordinator's config."""
    return {
        "secret": config.webhook_secret,
        "attempts": config.webhook_attempts,
        "backoff_s": config.webhook_backoff_s,
    }


OnAttempt = Callable[[Delivery, WebhookAttempt, WebhookState, float | None], None]
"""Told of each attempt: the delivery, the attempt, the delivery's new state, and when it
is tried next (``None``: never again)."""


class Webhooks:
    """The outbox's sender: one asyncio loop in the coordinator (:meth:`run`)."""

    def __init__(
        self,
        store: JobStore,
        *,
        on_attempt: OnAttempt,
        secret: str | None = None,
        attempts: int = 12,
        backoff_s: float = 10.0,
    ) -> None:
        self._store = store
        self._secret = secret or ""
        self._attempts = max(attempts, 1)
        self._backoff_s = backoff_s
        self._on_attempt = on_attempt
        self._pending = {d.id: d for d in store.outbox()}
        self._sending: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()

    @property
    def pending(self) -> int:
        """Deliveries not yet made or given up."""
        return len(self._pending)

    def prepare(self, job: Job, url: str, now: float) -> Delivery:
        """A delivery of ``job``'s ending, for the store to write with it
        (:meth:`JobStore.save`); then :meth:`queued`."""
        return Delivery(uuid.uuid4().hex[:16], job.id, url, webhook_body(job), 0, now)

    def queued(self, delivery: Delivery) -> None:
        self._pending[delivery.id] = delivery
        self._wake.set()

    async def run(self) -> None:
        """Send what is due, for ever (cancel to stop; what is left stays in the outbox).
        The HTTP client is made for the first delivery (a coordinator that sends none,
        a one-shot command's, never imports it)."""
        client: httpx.AsyncClient | None = None
        try:
            while True:
                now = time.time()
                waiting = [d for d in self._pending.values() if d.id not in self._sending]
                for delivery in sorted(waiting, key=lambda d: d.next_at):
                    if delivery.next_at > now or len(self._sending) >= CONCURRENCY:
                        break
                    if client is None:
                        import httpx

                        client = httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False)
                    self._send(client, delivery)
                later = [d.next_at for d in waiting if d.id not in self._sending]
                wait = min([*later, now + 60.0]) - now
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(wait, 0.05))
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if client is not None:
                await client.aclose()

    def _send(self, client: httpx.AsyncClient, delivery: Delivery) -> None:
        self._sending.add(delivery.id)
        task = asyncio.create_task(self._deliver(client, delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, client: httpx.AsyncClient, delivery: Delivery) -> None:
        try:
            attempt = await self._post(client, delivery)
            self._tried(delivery, attempt)
        except Exception:  # a bug here must not lose the delivery: it stays queued
            log.exception("webhook %s for job %s", delivery.id, delivery.job_id)
        finally:
            self._sending.discard(delivery.id)
            self._wake.set()

    async def _post(self, client: httpx.AsyncClient, delivery: Delivery) -> WebhookAttempt:
        t = int(time.time())
        status = json.loads(delivery.body).get("status", "ended")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "framefleet-webhooks",
            SIGNATURE_HEADER: sign_webhook(self._secret, delivery.body, t),
            DELIVERY_HEADER: delivery.id,
            EVENT_HEADER: f"job.{status}",
        }
        started, at = time.monotonic(), time.time()
        code: int | None = None
        error: str | None = None
        import httpx

        try:
            answer = await client.post(delivery.url, content=delivery.body, headers=headers)
            code = answer.status_code
        except httpx.HTTPError as exc:
            name = type(exc).__name__
            error = (f"{name}: {exc}" if str(exc) else name)[:300]
        ms = round((time.monotonic() - started) * 1000, 1)
        return WebhookAttempt(at, code, error, ms)

    def _tried(self, delivery: Delivery, attempt: WebhookAttempt) -> None:
        now, tries = time.time(), delivery.attempts + 1
        next_at: float | None = None
        if attempt.status is not None and 200 <= attempt.status < 300:
            state = WebhookState.DELIVERED
        elif tries >= self._attempts:
            state = WebhookState.FAILED
            log.warning(
                "webhook for job %s to %s given up after %d attempts (last: %s)",
                delivery.job_id,
                delivery.url,
                tries,
                attempt.error or f"HTTP {attempt.status}",
            )
        else:
            state, next_at = WebhookState.PENDING, now + backoff(tries, self._backoff_s)
        self._store.delivery_tried(delivery.id, tries, next_at)
        if next_at is None:
            self._pending.pop(delivery.id, None)
        else:
            self._pending[delivery.id] = Delivery(
                delivery.id, delivery.job_id, delivery.url, delivery.body, tries, next_at
            )
        self._on_attempt(delivery, attempt, state, next_at)
