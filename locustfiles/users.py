"""Locust users, one class per API family; each call's shape comes from the scenario's mix."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import gevent
from locust import User, task

from .calls import CallSpec
from .dialects import DIALECTS, FAMILY_NAMES, TEXT_ENDPOINTS
from .prompts import make_prompt
from .runtime import Runtime
from .sessions import Conversation
from .tenants import Tenant
from .transport import Transport, Transports


class GatewayUser(User):
    """A user that sends its family's share of the scenario's mix to the target."""

    abstract = True
    family = "openai"

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        rt = self.rt = Runtime.get()
        sc = rt.scenario

        def make(url: str) -> Transport:
            return Transport(url, sc.timeouts, insecure=rt.insecure, ca_file=sc.ca_file, profile=rt.profile,
                             client_cert=sc.client_cert, client_key=sc.client_key, secrets=rt.secrets)

        self.transport = Transports(self.host or rt.target, make)

    def wait_time(self) -> float:
        """Think time between calls (closed loop); none in open loop, where arrivals pace the calls."""
        rt = self.rt
        if rt.scenario.open_loop:
            return 0.0
        return rt.rng.uniform(rt.scenario.think_min_s, rt.scenario.think_max_s)

    def on_stop(self) -> None:
        """Close the user's connections."""
        self.transport.close()

    @task
    def call(self) -> None:
        """One call of the mix or of a trace arrival (two for a dry-run/real pair), after an arrival in open loop."""
        rt = self.rt
        scheduled, stage, arrival, index, label = None, None, None, None, None
        if rt.arrivals is not None:
            ticket = rt.arrivals.wait(timeout=1.0)
            if ticket is None:
                return
            scheduled, stage, arrival, index, label = ticket
        if rt.stopping:
            return
        tenant = rt.tenants.by_label.get(label) if label is not None else rt.tenants.pick(rt.rng)
        if tenant is not None and tenant.quota_refused is not None:
            if rt.arrivals is not None and scheduled is not None:
                rt.arrivals.dropped += 1  # the gateway ended this tenant's quota: its arrival goes nowhere
            gevent.sleep(0.05)  # no busy loop of draws of a tenant that can send nothing
            return
        # a trace arrival, and a tenant's own mix in open loop, make their own call whichever user class takes it
        if arrival is not None:
            specs = rt.workload.from_trace(arrival)
        elif tenant is not None and tenant.workload is not None:
            specs = tenant.workload.draw(None if rt.arrivals is not None else self.family)
        else:
            specs = rt.workload.draw(self.family)
        first = specs[-1]
        if (arrival is None and len(specs) == 1 and not first.dry_run and first.endpoint in TEXT_ENDPOINTS
                and rt.rng.random() < rt.scenario.conv_share):
            self.converse(first, scheduled, stage, index, tenant)
            return
        for spec in specs:
            if not rt.caller.run(self.transport, spec, scheduled=scheduled, stage=stage, arrival=index, tenant=tenant):
                gevent.sleep(0.05)  # a spend cap kept the call from starting: no busy loop of draws
                return
            scheduled, index = None, None

    def converse(self, first: CallSpec, scheduled: float | None, stage: int | None,
                 index: int | None = None, tenant: Tenant | None = None) -> None:
        """A multi-turn conversation: each turn sends the history plus a new message; think time between turns."""
        rt = self.rt
        sc = rt.scenario
        conv = Conversation(f"{rt.run_id}-w{rt.worker}-s{rt.rng.getrandbits(40):010x}", sc.conv_turns.sample(rt.rng),
                            server_state=sc.conv_server_state)
        spec = first
        while True:
            answer: list[str] = []
            rt.caller.run(self.transport, conv.next_turn(spec, rt.rng), scheduled=scheduled, stage=stage,
                          answer=answer, arrival=index, tenant=tenant)
            conv.answer(answer[0] if answer else None, answer[1] if len(answer) > 1 else None)
            scheduled, index = None, None
            if conv.done or rt.stopping:
                return
            gevent.sleep(rt.rng.uniform(sc.conv_think_min_s, sc.conv_think_max_s))
            if rt.stopping:
                return
            spec = replace(first, prompt=make_prompt(rt.rng, max(1, first.prompt_words)), messages=None)


def user_classes() -> dict[str, type[GatewayUser]]:
    """One Locust user class per API family the dialects declare (`OpenAIUser`, `AnthropicUser`, ...)."""
    out: dict[str, type[GatewayUser]] = {}
    for family in FAMILY_NAMES:
        decls = [m.DECLARATION for m in DIALECTS.values() if m.DECLARATION.family == family]
        title = next((d.family_title for d in decls if d.family_title), family.capitalize())
        endpoints = ", ".join(d.endpoint for d in decls)
        name = f"{title}User"
        out[name] = type(name, (GatewayUser,), {"family": family, "__doc__": f"Calls {endpoints}.",
                                                "__module__": __name__})
    return out
