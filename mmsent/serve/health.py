"""`HealthCache`: what `/healthz` answers, from a model ping at most `max_age_s` old, single
flight: health checks that come while a ping runs wait for that one, so a flood of them costs the
model about one ping per `max_age_s` (`ServeCfg.health_cache_s`) and scoring keeps its queue.

    health = HealthCache(ping, cfg.health_cache_s)   # ping: an async call of the model
    answer = await health.get()                      # or raises the cached RequestError (503)
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable

from .. import codes
from .errors import RequestError

logger = logging.getLogger("ray.serve")
PING_TIMEOUT_S = 10


class HealthCache:
    def __init__(self, ping: Callable[[], Awaitable[dict]], max_age_s: float):
        self.ping, self.max_age_s = ping, max_age_s
        self._answer: tuple[float, dict | RequestError] | None = None  # (when, answer)
        self._pinging: asyncio.Task | None = None

    async def get(self) -> dict:
        fresh = self._answer and time.monotonic() - self._answer[0] <= self.max_age_s
        if not fresh:
            if self._pinging is None:
                # in a context of its own: the shared ping is no child of the request that
                # started it, so Serve does not cancel it when that client goes away
                refresh = self._refresh()
                self._pinging = asyncio.create_task(refresh, context=contextvars.Context())
            await asyncio.shield(self._pinging)  # a caller that goes away leaves the ping running
        answer = self._answer[1]
        if isinstance(answer, RequestError):
            raise answer.copy()  # a fresh copy for each caller's response
        return answer

    async def _refresh(self) -> None:
        answer = RequestError(503, codes.OVERLOADED, "the model does not answer")
        try:
            answer = await asyncio.wait_for(self.ping(), PING_TIMEOUT_S)
        except RequestError as e:
            answer = e
        except Exception:  # noqa: BLE001 - any failure means unhealthy, not a 500
            logger.warning("health check: the model does not answer", exc_info=True)
        finally:  # even when cancelled (the replica stops): the next check pings again
            self._answer, self._pinging = (time.monotonic(), answer), None
