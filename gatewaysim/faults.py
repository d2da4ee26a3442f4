"""The fault table: where each fault applies, whether it is billed, what a client should record."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FaultSpec:
    """One row of the fault table."""

    applies_to: str  # all | streams | images
    billed: str
    client_error_kind: str | None
    retry: str


FAULT_TABLE: dict[str, FaultSpec] = {
    "server_error": FaultSpec("all", "no", "http_5xx", "yes"),
    "rate_limited": FaultSpec("all", "no", "http_429", "yes, after Retry-After"),
    "reset": FaultSpec("all", "no", "reset", "yes"),
    "disconnect_midstream": FaultSpec("streams", "no", "truncated", "yes"),
    "stream_error": FaultSpec("streams", "no", "stream_error", "yes"),
    "malformed_chunk": FaultSpec("streams", "no", "protocol", "yes"),
    "stall": FaultSpec("all", "no if the client gives up first", "timeout", "yes"),
    "fewer_images": FaultSpec("images", "per image returned", None, "no"),
    "disconnect_after_billing": FaultSpec("all but dry runs", "yes, once", "truncated", "yes (replayed)"),
}

#: Faults that can meet a replayed response (the stored answer needs no generation).
REPLAY_FAULTS = ("server_error", "rate_limited", "reset", "stall")


def applicable(stream: bool, dry_run: bool, kind: str, images_n: int, replay: bool) -> list[str]:
    """The fault kinds that can meet an attempt of this shape (kind: the served model's kind)."""
    kinds = ["server_error", "rate_limited", "reset", "stall"]
    if replay:
        return kinds
    if stream and not dry_run:
        kinds += ["disconnect_midstream", "stream_error", "malformed_chunk"]
    if kind == "image" and images_n >= 2 and not dry_run:
        kinds.append("fewer_images")
    if not dry_run:
        kinds.append("disconnect_after_billing")
    return kinds
