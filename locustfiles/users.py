"""Locust users, one class per API family; each call's shape comes from the scenario's mix."""

from __future__ import annotations

from typing import Any

from locust import User, task

from .runtime import Runtime
from .transport import Transport


class GatewayUser(User):
    """A user that sends its family's share of the scenario's mix to the target."""

    abstract = True
    family = "openai"

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.rt = Runtime.get()
        self.transport = Transport(self.host or self.rt.target, self.rt.scenario.timeouts,
                                   insecure=self.rt.insecure, ca_file=self.rt.scenario.ca_file)

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
        """One call of the mix (two for a dry-run/real pair), after an arrival in open loop."""
        rt = self.rt
        scheduled, stage = None, None
        if rt.arrivals is not None:
            ticket = rt.arrivals.wait(timeout=1.0)
            if ticket is None:
                return
            scheduled, stage = ticket
        if rt.stopping:
            return
        for spec in rt.workload.draw(self.family):
            rt.caller.run(self.transport, spec, scheduled=scheduled, stage=stage)
            scheduled = None


class OpenAIUser(GatewayUser):
    """Chat completions, embeddings, images and model listing."""

    family = "openai"


class AnthropicUser(GatewayUser):
    """Anthropic Messages."""

    family = "anthropic"


class GeminiUser(GatewayUser):
    """Gemini generateContent and streamGenerateContent."""

    family = "gemini"
