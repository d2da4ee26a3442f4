"""Turns the scenario's mix into concrete calls: endpoint, model, stream mode, prompt, shares."""

from __future__ import annotations

import itertools
import random
from bisect import bisect

from .caller import stats_name
from .calls import CallSpec
from .dialects import FAMILIES
from .prompts import Calibrator, make_prompt
from .scenario import MixEntry, Scenario


class _Weighted:
    def __init__(self, items: list[tuple[object, float]]) -> None:
        self.items = [i for i, w in items if w > 0]
        self.cum = list(itertools.accumulate(w for _, w in items if w > 0))

    def pick(self, rng: random.Random) -> object:
        return self.items[bisect(self.cum, rng.random() * self.cum[-1])]


class Workload:
    """Draws calls from the mix for each API family."""

    def __init__(self, scenario: Scenario, rng: random.Random, calibrator: Calibrator) -> None:
        self.scenario = scenario
        self.rng = rng
        self.calibrator = calibrator
        self.by_family: dict[str, _Weighted] = {}
        for fam in ("openai", "anthropic", "gemini"):
            entries = [(m, m.weight) for m in scenario.mix if FAMILIES[m.endpoint] == fam and m.weight > 0]
            if entries:
                self.by_family[fam] = _Weighted(entries)
        self.models = {id(m): _Weighted(list(m.models)) for m in scenario.mix}

    def family_weights(self) -> dict[str, float]:
        """Total mix weight per API family (the Locust user class weights)."""
        out = {"openai": 0.0, "anthropic": 0.0, "gemini": 0.0}
        for m in self.scenario.mix:
            out[FAMILIES[m.endpoint]] += m.weight
        return out

    def draw(self, family: str) -> list[CallSpec]:
        """The next call of a family (two for a dry-run/real pair)."""
        rng = self.rng
        entry = self.by_family[family].pick(rng)
        assert isinstance(entry, MixEntry)
        model = str(self.models[id(entry)].pick(rng))
        spec = CallSpec(endpoint=entry.endpoint, model=model, name="")
        if entry.endpoint in ("chat", "messages", "gemini"):
            spec.stream = rng.random() < entry.stream
            if spec.stream and entry.endpoint == "gemini":
                spec.stream_format = "json_array" if rng.random() < entry.json_array else "sse"
            spec.tools = rng.random() < entry.tools
            spec.reasoning = rng.random() < entry.reasoning
            spec.max_tokens = entry.output_tokens.sample(rng)
            spec.ignore_eos = entry.ignore_eos
        if entry.endpoint != "models":
            target = entry.prompt_tokens.sample(rng)
            words = self.calibrator.words_for(target)
            spec.prompt_tokens_target = target
            spec.prompt_words = words
            spec.prompt = make_prompt(rng, words)
        if entry.endpoint == "embeddings":
            n = entry.inputs.sample(rng)
            spec.inputs = [spec.prompt] + [make_prompt(rng, spec.prompt_words) for _ in range(n - 1)]
            spec.dims = entry.dims
        if entry.endpoint == "images":
            spec.images_n = rng.choice(entry.images_n)
            spec.image_size = entry.image_size
            spec.image_quality = entry.image_quality
        u = rng.random()
        if u < entry.dry_run:
            spec.dry_run = True
        elif u < entry.dry_run + entry.pair:
            pair_id = f"pair-{rng.getrandbits(48):012x}"
            dry = CallSpec(**{f: getattr(spec, f) for f in CallSpec.__slots__})
            dry.dry_run, dry.pair_id, spec.pair_id = True, pair_id, pair_id
            dry.name = stats_name(dry)
            spec.name = stats_name(spec)
            return [dry, spec]
        spec.name = stats_name(spec)
        return [spec]
