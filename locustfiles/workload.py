"""Turns the scenario's mix (or a trace's arrivals) into concrete calls: endpoint, model, stream mode, prompt."""

from __future__ import annotations

import itertools
import random
from bisect import bisect
from collections import deque
from dataclasses import replace

from .caller import stats_name
from .calls import CallSpec
from .dialects import FAMILIES, FAMILY_NAMES, TEXT_ENDPOINTS
from .prompts import Calibrator, make_prompt
from .scenario import MixEntry, Scenario
from .traces import TraceArrival

#: How many of a mix line's recent calls its `repeat` share draws from.
REPEAT_POOL = 8


class _Weighted:
    def __init__(self, items: list[tuple[object, float]]) -> None:
        self.items = [i for i, w in items if w > 0]
        self.cum = list(itertools.accumulate(w for _, w in items if w > 0))

    def pick(self, rng: random.Random) -> object:
        return self.items[bisect(self.cum, rng.random() * self.cum[-1])]


class Workload:
    """Draws calls from the mix for each API family."""

    def __init__(self, scenario: Scenario, rng: random.Random, calibrator: Calibrator,
                 mix: list[MixEntry] | None = None) -> None:
        self.scenario = scenario
        mix = scenario.mix if mix is None else mix
        self.mix = mix
        self.anything = _Weighted([(m, m.weight) for m in mix]) if any(m.weight > 0 for m in mix) else None
        self.rng = rng
        self.calibrator = calibrator
        self.dry_runs_off = False  # set once the gateway showed it ignores dry runs
        self.by_family: dict[str, _Weighted] = {}
        for fam in FAMILY_NAMES:
            entries = [(m, m.weight) for m in mix if FAMILIES[m.endpoint] == fam and m.weight > 0]
            if entries:
                self.by_family[fam] = _Weighted(entries)
        self.models = {id(m): _Weighted(list(m.models)) for m in mix}
        self.recent: dict[int, deque[CallSpec]] = {}  # a line's last calls, for its `repeat` share
        self.trace_entries: dict[str, MixEntry] = {}
        for m in mix:
            self.trace_entries.setdefault(m.endpoint, m)  # a trace arrival's shape: the first line of its endpoint

    def family_weights(self) -> dict[str, float]:
        """Total mix weight per API family (the Locust user class weights).

        In a trace replay any free user takes any arrival, whatever its endpoint, so the weights only
        decide which classes Locust shows: the families the trace's endpoint settings or the mix name."""
        out = dict.fromkeys(FAMILY_NAMES, 0.0)
        for m in self.scenario.all_mix:
            out[FAMILIES[m.endpoint]] += m.weight
        tr = self.scenario.trace
        if tr is not None:
            for e, w in tr.endpoint_weights.items():
                out[FAMILIES[e]] += w
            for e in tr.endpoint_by_model.values():
                out[FAMILIES[e]] += 1.0
            if sum(out.values()) <= 0:
                out[FAMILY_NAMES[0]] = 1.0
        return out

    def draw(self, family: str | None) -> list[CallSpec]:
        """The next call of a family, or of any family with None (two for a dry-run/real pair)."""
        rng = self.rng
        pick = self.anything if family is None or family not in self.by_family else self.by_family[family]
        assert pick is not None
        entry = pick.pick(rng)
        assert isinstance(entry, MixEntry)
        if entry.repeat > 0:
            recent = self.recent.setdefault(id(entry), deque(maxlen=REPEAT_POOL))
            if recent and rng.random() < entry.repeat:  # the same request again, byte for byte
                return [replace(recent[rng.randrange(len(recent))])]
            specs = self._build(entry, str(self.models[id(entry)].pick(rng)))
            if len(specs) == 1 and not specs[0].dry_run:
                recent.append(specs[0])
            return specs
        model = str(self.models[id(entry)].pick(rng))
        return self._build(entry, model)

    def from_trace(self, arrival: TraceArrival) -> list[CallSpec]:
        """The call of a trace arrival: its endpoint, model, input tokens (as the prompt's target, through
        the calibrator) and output tokens (as max_tokens); stream, tools and the other shares from the
        mix line of its endpoint, else streamed at `trace.stream`."""
        tr = self.scenario.trace
        assert tr is not None
        entry = self.trace_entries.get(arrival.endpoint)
        if entry is None:
            entry = MixEntry(endpoint=arrival.endpoint, weight=1.0, models=[(arrival.model, 1.0)], stream=tr.stream)
            self.trace_entries[arrival.endpoint] = entry
        return self._build(entry, arrival.model, arrival.input_tokens, arrival.output_tokens, tr.ignore_eos)

    def _build(self, entry: MixEntry, model: str, prompt_tokens: int | None = None, output_tokens: int | None = None,
               ignore_eos: bool | None = None) -> list[CallSpec]:
        rng = self.rng
        spec = CallSpec(endpoint=entry.endpoint, model=model, name="", headers=entry.headers)
        if entry.endpoint in TEXT_ENDPOINTS:
            spec.stream = rng.random() < entry.stream
            if spec.stream and entry.endpoint == "gemini":
                spec.stream_format = "json_array" if rng.random() < entry.json_array else "sse"
            spec.tools = rng.random() < entry.tools
            spec.reasoning = rng.random() < entry.reasoning
            spec.max_tokens = output_tokens if output_tokens is not None else entry.output_tokens.sample(rng)
            spec.ignore_eos = ignore_eos if ignore_eos is not None else entry.ignore_eos
        if entry.endpoint != "models":
            target = prompt_tokens if prompt_tokens is not None else entry.prompt_tokens.sample(rng)
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
        if self.dry_runs_off:
            pass
        elif u < entry.dry_run:
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
