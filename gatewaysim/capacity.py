"""Finite capacity per model: generation slots, a bounded queue, occupancy-dependent decode speed."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from typing import Any


class QueueFull(Exception):
    """The model's queue is full: the request gets 429 with this Retry-After."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"queue full, retry after {retry_after_s}s")
        self.retry_after_s = retry_after_s


class ModelPool:
    """Slots and a FIFO queue for one model."""

    def __init__(self, name: str, spec: dict[str, Any]) -> None:
        self.name = name
        self.spec = spec
        self.slots = int(spec["slots"])
        self.queue_limit = int(spec["queue"])
        self.active = 0
        self.waiting: deque[asyncio.Future[None]] = deque()
        self.admitted = 0
        self.refused = 0
        self.peak_active = 0
        self.peak_queue = 0

    async def acquire(self) -> float:
        """Take a slot, waiting in the queue if needed; returns seconds spent queued."""
        if self.active < self.slots and not self.waiting:
            self._take()
            return 0.0
        if len(self.waiting) >= self.queue_limit:
            self.refused += 1
            raise QueueFull(self.retry_after())
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self.waiting.append(fut)
        self.peak_queue = max(self.peak_queue, len(self.waiting))
        start = time.monotonic()  # not loop.time(): uvloop's is in whole milliseconds
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed over just as we left
            else:
                try:
                    self.waiting.remove(fut)
                except ValueError:
                    pass
            raise
        return time.monotonic() - start

    def _take(self) -> None:
        self.active += 1
        self.admitted += 1
        self.peak_active = max(self.peak_active, self.active)

    def release(self) -> None:
        """Give the slot back, handing it to the first waiter if any."""
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                self.admitted += 1
                fut.set_result(None)
                return
        self.active -= 1

    def retry_after(self) -> int:
        """Seconds until the queue is expected to have room, between 1 and 60."""
        service = service_time_s(self.spec, input_tokens=100, output_tokens=64, images=1)
        wait = (len(self.waiting) + 1) * service / max(1, self.slots)
        return int(min(60, max(1, math.ceil(wait))))

    def decode_tokens_per_s(self) -> float:
        """Per-stream decode speed at the current occupancy."""
        base = float(self.spec["decode_tokens_per_s"])
        slow = float(self.spec["slowdown_at_full"])
        if self.slots <= 1:
            return base * (1 - slow) if self.active >= 1 else base
        frac = max(0, self.active - 1) / (self.slots - 1)
        return base * (1 - slow * frac)

    def snapshot(self) -> dict[str, Any]:
        """Counters for the admin API."""
        return {
            "slots": self.slots,
            "queue_limit": self.queue_limit,
            "active": self.active,
            "queued": len(self.waiting),
            "admitted": self.admitted,
            "refused": self.refused,
            "peak_active": self.peak_active,
            "peak_queue": self.peak_queue,
        }


def partition(spec: dict[str, Any], share: float) -> dict[str, Any]:
    """A model's settings for one tenant's part of it: max(1, round(slots x share)) slots, the queue alike."""
    queue = int(spec["queue"])
    return {**spec, "slots": max(1, round(int(spec["slots"]) * share)),
            "queue": max(1, round(queue * share)) if queue > 0 else 0}


def ttft_s(spec: dict[str, Any], input_tokens: int, jitter_u: float) -> float:
    """Time from admission to the first output token: base + prefill + seeded jitter."""
    return (
        float(spec["base_ms"])
        + float(spec["prefill_ms_per_token"]) * input_tokens
        + float(spec["ttft_jitter_ms"]) * jitter_u
    ) / 1000.0


def service_time_s(spec: dict[str, Any], input_tokens: int, output_tokens: int, images: int = 1) -> float:
    """Mean time one request holds a slot when every slot is busy."""
    jitter = float(spec.get("ttft_jitter_ms", 0)) / 2
    base = float(spec["base_ms"]) + jitter
    kind = spec["kind"]
    if kind == "image":
        return (base + float(spec["per_image_ms"]) * images) / 1000.0
    prefill = float(spec["prefill_ms_per_token"]) * input_tokens
    if kind == "embedding":
        return (base + prefill) / 1000.0
    full_speed = float(spec["decode_tokens_per_s"]) * (1 - float(spec["slowdown_at_full"]))
    return (base + prefill) / 1000.0 + output_tokens / full_speed


def capacity(spec: dict[str, Any], input_tokens: int, output_tokens: int, images: int = 1) -> dict[str, float]:
    """Service rate and maximum sustainable offered rate for a fixed workload."""
    service = service_time_s(spec, input_tokens, output_tokens, images)
    mu = int(spec["slots"]) / service
    return {
        "service_time_s": service,
        "service_rate_rps": mu,
        "max_sustainable_rps": mu / 0.95,
    }
