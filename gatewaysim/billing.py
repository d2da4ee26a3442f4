"""Holds, releases and charges, with billing errors planted on purpose."""

from __future__ import annotations

import secrets
import time
from dataclasses import replace
from decimal import Decimal
from typing import Any

from ttformats.prices import PriceSheet, Usage

from .calls import Call, Plan
from .config import BILLING_ERROR_KINDS
from .draws import Planter
from .ledger import Ledger, format_amount
from .truth import Truth

#: Faults after which the gateway had started work, so a planted `failed_billed` can charge them.
FAILED_BILLABLE = ("server_error", "reset", "disconnect_midstream", "stream_error", "malformed_chunk")


def new_request_id() -> str:
    """A fresh opaque request id."""
    return "req_" + secrets.token_hex(12)


class Biller:
    """Writes the ledger for each attempt and plants billing errors as configured."""

    def __init__(self, prices: PriceSheet, ledger: Ledger, truth: Truth, seed: int, section: dict[str, Any]) -> None:
        self.prices = prices
        self.ledger = ledger
        self.truth = truth
        self.planter = Planter(seed, "billing", section, BILLING_ERROR_KINDS)
        self.amount_factor = Decimal(str(section["amount_factor"]))
        self.token_delta = int(section["token_delta"])

    @property
    def currency(self) -> str:
        """The currency of every amount."""
        return self.prices.currency

    def usage(self, call: Call, plan: Plan, images: int | None = None) -> Usage:
        """Billable usage of a produced answer."""
        return Usage(
            input_tokens=plan.input_tokens if call.kind != "image" else 0,
            output_tokens=plan.output_tokens,
            cached_input_tokens=plan.cached_input_tokens,
            cache_write_tokens=plan.cache_write_tokens,
            images=len(plan.images) if images is None else images,
            image_size=call.image_size,
            image_quality=call.image_quality,
        )

    def estimate(self, call: Call, spec: dict[str, Any]) -> Usage:
        """The basis of a hold: the prompt and the most output the call may produce."""
        if call.kind == "image":
            return Usage(images=call.images_n, image_size=call.image_size, image_quality=call.image_quality)
        if call.kind == "embedding":
            return Usage(input_tokens=call.input_tokens)
        cap = call.max_tokens if call.max_tokens is not None else int(spec["max_output_default"])
        return Usage(input_tokens=call.input_tokens, output_tokens=cap)

    def amount(self, model: str, usage: Usage) -> Decimal:
        """Exact price of the usage."""
        return self.prices.cost(model, usage)

    def _row(self, kind: str, ctx: dict[str, Any], call: Call, usage: Usage, amount: Decimal,
             request_id: str | None = None) -> None:
        # a charge under a request id nobody sent (unknown_request) carries no idempotency key nor attempt id
        key = ctx.get("idempotency_key") if request_id is None else None
        attempt = ctx.get("client_attempt_id") if request_id is None else None
        self.ledger.add(kind, request_id or ctx["request_id"], key, call.endpoint, call.model, usage, amount,
                        self.currency, client_attempt_id=attempt)

    def hold(self, ctx: dict[str, Any], call: Call, usage: Usage) -> Decimal:
        """Place a hold for the estimate; returns its amount."""
        amount = self.amount(call.model, usage)
        self._row("hold", ctx, call, usage, amount)
        ctx["hold"] = (usage, amount)
        return amount

    def release(self, ctx: dict[str, Any], call: Call) -> None:
        """Release the attempt's hold, if one is open."""
        held = ctx.pop("hold", None)
        if held is not None:
            self._row("release", ctx, call, held[0], held[1])

    def _charge(self, ctx: dict[str, Any], call: Call, usage: Usage, amount: Decimal,
                request_id: str | None = None) -> None:
        self._row("charge", ctx, call, usage, amount, request_id)
        if request_id is None:
            entry = ctx["entry"]
            entry["charged_amount"] = format_amount(Decimal(entry["charged_amount"]) + amount)

    def settle_success(self, ctx: dict[str, Any], call: Call, usage: Usage, requested_images: int | None) -> None:
        """Release the hold and charge a completed call, planting an error if drawn."""
        self.release(ctx, call)
        entry = ctx["entry"]
        fair = self.amount(call.model, usage)
        entry["fair_amount"] = format_amount(fair)
        apply = ["missing_charge", "unknown_request"]
        if usage.cached_input_tokens > 0:
            apply.append("cache_discount_missing")
        if call.kind != "image":  # images are billed per image, not per token
            apply.append("token_mismatch")
        if fair > 0:
            apply.append("amount_mismatch")
        if requested_images is not None and usage.images < requested_images:
            apply.append("image_count_mismatch")
        planted = self.planter.choose(ctx["attempt_key"], apply)
        entry["billing_error"] = planted
        if planted == "missing_charge":
            return
        if planted == "amount_mismatch":
            self._charge(ctx, call, usage, fair * self.amount_factor)
            return
        if planted == "token_mismatch":
            wrong = replace(usage, output_tokens=usage.output_tokens + self.token_delta)
            self._charge(ctx, call, wrong, self.amount(call.model, wrong))
            return
        if planted == "cache_discount_missing":  # cached tokens billed at the full input rate
            self._charge(ctx, call, usage, self.amount(call.model, replace(usage, cached_input_tokens=0)))
            return
        if planted == "image_count_mismatch" and requested_images is not None:
            wrong = replace(usage, images=requested_images)
            self._charge(ctx, call, wrong, self.amount(call.model, wrong))
            return
        self._charge(ctx, call, usage, fair)
        if planted == "unknown_request":
            ghost = new_request_id()
            entry["billing_error"] = None
            ghost_entry = self.truth.open(ghost, received=time.time(), endpoint=call.endpoint, model=call.model,
                                          billing_error="unknown_request", outcome="never_sent",
                                          planted_by=ctx["request_id"], charged_amount=format_amount(fair))
            self._charge(ctx, call, usage, fair, request_id=ghost)
            self.truth.close(ghost_entry)  # never sent: final as it is

    def settle_failure(self, ctx: dict[str, Any], call: Call, usage: Usage | None, fault: str | None) -> None:
        """Release the hold of a failed attempt; charge it only if `failed_billed` is drawn."""
        self.release(ctx, call)
        if usage is None or fault not in FAILED_BILLABLE:
            return
        if self.planter.choose(ctx["attempt_key"], ["failed_billed"]) == "failed_billed":
            ctx["entry"]["billing_error"] = "failed_billed"
            self._charge(ctx, call, usage, self.amount(call.model, usage))

    def settle_dry_run(self, ctx: dict[str, Any], call: Call, usage: Usage, amount: Decimal) -> None:
        """Release a dry run's hold; charge it only if `dry_run_billed` is drawn."""
        self.release(ctx, call)
        if self.planter.choose(ctx["attempt_key"], ["dry_run_billed"]) == "dry_run_billed":
            ctx["entry"]["billing_error"] = "dry_run_billed"
            self._charge(ctx, call, usage, amount)

    def settle_replay(self, ctx: dict[str, Any], call: Call, usage: Usage) -> None:
        """A replay costs nothing, unless `double_charge` is drawn."""
        if self.planter.choose(ctx["attempt_key"], ["double_charge"]) == "double_charge":
            ctx["entry"]["billing_error"] = "double_charge"
            self._charge(ctx, call, usage, self.amount(call.model, usage))
