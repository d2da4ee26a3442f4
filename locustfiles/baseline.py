"""Gateway overhead: which route an attempt takes (the gateway or the baseline) and the prompt marker that joins
it to the upstream requests it caused."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .calls import CallSpec
from .profile import Profile, ProfileError, load_profile
from .scenario import Scenario, ScenarioError

MARKER_HEX = 12


def marker_text(bits: int) -> str:
    """The marker for an attempt: `[ttb:<12 hex>]` (what the simulator's truth keeps as `marker`)."""
    return f"[ttb:{bits & ((1 << (4 * MARKER_HEX)) - 1):0{MARKER_HEX}x}]"


def _mark_message(msg: dict[str, Any], marker: str) -> bool:
    """Prefix the marker to a message's first text; False when it has none."""
    content = msg.get("content")
    if isinstance(content, str):
        msg["content"] = f"{marker} {content}"
        return True
    for part in (content if isinstance(content, list) else msg.get("parts") or []):
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            part["text"] = f"{marker} {part['text']}"
            return True
    return False


def with_marker(spec: CallSpec, marker: str) -> CallSpec:
    """The call with the marker prepended to the last user message's text (or the prompt, or the last input)."""
    if spec.messages:
        messages = copy.deepcopy(spec.messages)
        for msg in reversed(messages):
            if isinstance(msg, dict) and msg.get("role") == "user" and _mark_message(msg, marker):
                return replace(spec, messages=messages)
        return spec
    if spec.inputs:
        return replace(spec, inputs=[*spec.inputs[:-1], f"{marker} {spec.inputs[-1]}"])
    if spec.prompt:
        return replace(spec, prompt=f"{marker} {spec.prompt}")
    return spec


@dataclass(slots=True)
class Overhead:
    """A scenario's overhead section, resolved: the baseline's origin, key and profile, and the marker switch."""

    marker: bool
    baseline_stages: frozenset[int]
    url: str | None = None
    key: str | None = None
    profile: Profile | None = None

    @classmethod
    def from_scenario(cls, scenario: Scenario, api_key: str, need_baseline: bool = True) -> Overhead | None:
        """None without an overhead section; raises ScenarioError when baseline stages cannot be sent."""
        ov = scenario.overhead
        if not ov:
            return None
        stages = frozenset(i for i, st in enumerate(scenario.stages) if st.baseline)
        out = cls(marker=bool(ov.get("marker")), baseline_stages=stages)
        if not stages or not need_baseline:
            return out
        where = f"{scenario.path}: overhead"
        if ov.get("baseline", "sim") == "sim":
            out.url = os.environ.get("TTBENCH_SIM_URL")
            if not out.url:
                raise ScenarioError(f"{where}.baseline: 'sim' needs `ttbench run` (which starts the simulator and "
                                    "sets TTBENCH_SIM_URL) or a URL")
            default_key = os.environ.get("TTBENCH_SIM_KEY") or api_key
        else:
            out.url = str(ov["baseline"]).rstrip("/")
            default_key = api_key
        env = ov.get("baseline_key_env")
        if env:
            out.key = os.environ.get(env)
            if not out.key:
                raise ScenarioError(f"{where}.baseline_key_env: environment variable {env} is not set")
        else:
            out.key = default_key
        name = str(ov.get("baseline_gateway") or "tt")
        if name.endswith((".yaml", ".yml")) and not Path(name).is_absolute():
            name = str(Path(scenario.path).parent / name)
        try:
            out.profile = load_profile(name, None, f"{where}.baseline_gateway")
        except ProfileError as exc:
            raise ScenarioError(str(exc)) from None
        return out

    def route(self, stage: int | None) -> str:
        """`baseline` for an attempt of a baseline stage, else `gateway`."""
        return "baseline" if stage is not None and stage in self.baseline_stages else "gateway"
