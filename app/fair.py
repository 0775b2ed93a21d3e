"""A fair queue: no browser tab, and no single network address, can take it over.

Gradio's queue is first come, first served, with one global ``max_size``: before this,
one client could open 70 sessions in 6 s and leave everyone else "Queue is full" for
hours.  Two caps are checked when a request *joins* the queue (before it waits):

* **one heavy job per session** — a browser tab (a ``gradio_client`` session) may have at
  most one training/comparison/generation queued or running; a second one is *refused*
  with a message (not replaced: replacing would silently drop the run the user is
  watching, and a script's result would depend on timing; Stop is one click away);
* **a per-client cap** — at most :data:`DEFAULT_PER_CLIENT` heavy jobs (and twice as many
  requests of any kind, so the page's short updates still get through) queued or running
  per client address (``SYMLORA_PER_CLIENT``): a class of ~40 behind one school NAT still
  fits, one attacker cannot fill the queue, whose size (``SYMLORA_QUEUE_SIZE``,
  :data:`DEFAULT_QUEUE_SIZE`) is several clients' caps.

The address is the TCP peer's; behind a reverse proxy that sets ``X-Forwarded-For``
(Hugging Face Spaces) set ``SYMLORA_TRUST_FORWARDED=1`` (automatic on Spaces) to use the
address the proxy saw.  Gradio has no public hook for this, so :func:`install` wraps its
queue's ``push`` (``Blocks._queue``), refusing with the answer each client shows as a
sentence (:func:`refuse`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

HEAVY = "heavy"  # the concurrency id of trainings, comparisons, generation, merge checks, exports
DEFAULT_PER_CLIENT = 40
DEFAULT_QUEUE_SIZE = 256


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else default


def queue_size() -> int:
    """Gradio's ``max_size`` (``SYMLORA_QUEUE_SIZE``, default :data:`DEFAULT_QUEUE_SIZE`)."""
    return _env_int("SYMLORA_QUEUE_SIZE", DEFAULT_QUEUE_SIZE)


@dataclass(frozen=True)
class Policy:
    """The caps: ``per_client`` requests per address, one heavy job per session."""

    per_client: int = DEFAULT_PER_CLIENT
    trust_forwarded: bool = False

    @classmethod
    def from_env(cls) -> "Policy":
        trust = os.environ.get("SYMLORA_TRUST_FORWARDED", "1" if os.environ.get("SPACE_ID") else "0")
        return cls(per_client=_env_int("SYMLORA_PER_CLIENT", DEFAULT_PER_CLIENT),
                   trust_forwarded=trust.strip().lower() in {"1", "true", "yes"})

    def client_of(self, request: Any) -> str:
        """The client address of a request (FastAPI/Starlette ``Request``)."""
        if self.trust_forwarded:
            # The last address is the one our proxy appended (what it saw); earlier ones are
            # whatever the client wrote, so trusting the first would let anyone pick a new
            # "address" per request and walk past the cap.
            hops = [h.strip() for h in (request.headers.get("x-forwarded-for") or "").split(",") if h.strip()]
            if hops:
                return hops[-1]
        client = getattr(request, "client", None)
        return getattr(client, "host", None) or "unknown"

    def refusal(self, session: str | None, client: str, heavy: bool,
                waiting: list[tuple[str, str, bool]]) -> str | None:
        """Why a new request must not join (``None``: it may).  ``waiting``: the
        ``(session, client, heavy)`` of every request queued or running."""
        if heavy and session and any(s == session and h for s, _, h in waiting):
            return ("You already have a run queued or going in this tab: wait for it or press Stop first "
                    "(one at a time per tab keeps the queue fair).")
        mine = [h for _, c, h in waiting if c == client]
        if heavy and sum(mine) >= self.per_client:
            return (f"Too many requests from your network address ({self.per_client} runs queued or going): "
                    f"wait for some to finish.")
        if len(mine) >= 2 * self.per_client:
            return (f"Too many requests from your network address ({2 * self.per_client} queued or running): "
                    f"wait for some to finish.")
        return None


def refuse(reason: str, request: Any) -> tuple[bool, Any, str]:
    """Gradio's answer to a refused join, in the form each client shows best: a page
    (a browser) shows an "error" answer as a toast; ``gradio_client`` raises the message of
    a "validator_error" answer (an "error" reaches it as a bare HTTP 400)."""
    agent = (request.headers.get("user-agent") or "") if request is not None else ""
    if agent.startswith("Mozilla/"):
        return False, reason, "error"
    return False, [{"__type__": "validate", "is_valid": False, "message": reason, "parameter_name": "queue"}], \
        "validator_error"


def _events(queue: Any) -> Iterator[Any]:
    for event_queue in queue.event_queue_per_concurrency_id.values():
        yield from event_queue.queue
    for job in queue.active_jobs:
        if job:
            yield from job


def install(demo: Any, policy: Policy | None = None) -> Policy:
    """Check ``policy`` whenever a request joins ``demo``'s queue (call after ``demo.queue()``)."""
    policy = policy or Policy.from_env()
    queue = demo._queue
    push = queue.push

    async def fair_push(body: Any, request: Any, username: Any):
        fn_index = getattr(body, "fn_index", None)
        fn = demo.fns.get(fn_index) if isinstance(fn_index, int) else None
        if fn is not None:
            waiting = [(e.session_hash, policy.client_of(e.request), e.concurrency_id == HEAVY)
                       for e in _events(queue) if not getattr(e, "closed", False)]
            reason = policy.refusal(body.session_hash, policy.client_of(request), fn.concurrency_id == HEAVY, waiting)
            if reason is not None:
                log.info("queue join refused (%s): %s", policy.client_of(request), reason)
                return refuse(reason, request)
        return await push(body, request, username)

    queue.push = fair_push
    demo.fair_policy = policy
    return policy
