"""The price sheet file format (version 1), shared by the simulator, the load generator and the analysis."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

MICRO = Decimal(1_000_000)
TOKEN_RATES = ("input", "output", "cached_input", "cache_write")


class PriceError(ValueError):
    """A bad price sheet: the message names the file, key and problem."""


def _dec(where: str, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PriceError(f"{where}: expected a price (number or string), got {type(value).__name__}")
    try:
        out = Decimal(str(value))
    except InvalidOperation:
        raise PriceError(f"{where}: not a number: {value!r}") from None
    if out < 0 or not out.is_finite():
        raise PriceError(f"{where}: must be a non-negative number, got {value!r}")
    return out


@dataclass
class ModelPrice:
    """Prices of one model: per 1M tokens by token class, and per image by size and quality."""

    input: Decimal = Decimal(0)
    output: Decimal = Decimal(0)
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    images: dict[str, dict[str, Decimal]] = field(default_factory=dict)

    def image_price(self, size: str, quality: str) -> Decimal:
        """Price of one image of that size and quality (falls back to 'auto')."""
        by_size = self.images.get(size) or self.images.get("auto") or {}
        price = by_size.get(quality)
        if price is None:
            price = by_size.get("auto", Decimal(0))
        return price


@dataclass
class Usage:
    """Billable quantities of one call."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    images: int = 0
    image_size: str = "auto"
    image_quality: str = "auto"


@dataclass
class PriceSheet:
    """A whole price sheet: currency and per-model prices."""

    currency: str
    models: dict[str, ModelPrice]
    source: str = "<inline>"

    @classmethod
    def from_mapping(cls, data: Any, where: str = "<inline>") -> PriceSheet:
        """Build a price sheet from its parsed YAML mapping."""
        if not isinstance(data, dict):
            raise PriceError(f"{where}: expected a mapping")
        unknown = set(data) - {"version", "currency", "models"}
        if unknown:
            raise PriceError(f"{where}: {sorted(unknown)[0]}: unknown key")
        if data.get("version", 1) != 1:
            raise PriceError(f"{where}: version: only version 1 is known, got {data.get('version')!r}")
        currency = data.get("currency", "USD")
        if not isinstance(currency, str) or not currency:
            raise PriceError(f"{where}: currency: expected a currency code")
        models_raw = data.get("models")
        if not isinstance(models_raw, dict) or not models_raw:
            raise PriceError(f"{where}: models: expected a mapping of model names to prices")
        models: dict[str, ModelPrice] = {}
        for name, spec in models_raw.items():
            at = f"{where}: models.{name}"
            if not isinstance(spec, dict):
                raise PriceError(f"{at}: expected a mapping")
            price = ModelPrice()
            for key, value in spec.items():
                if key in TOKEN_RATES:
                    setattr(price, key, _dec(f"{at}.{key}", value))
                elif key == "images":
                    if not isinstance(value, dict):
                        raise PriceError(f"{at}.images: expected a mapping of sizes")
                    for size, qualities in value.items():
                        if not isinstance(qualities, dict):
                            raise PriceError(f"{at}.images.{size}: expected a mapping of qualities")
                        price.images[str(size)] = {
                            str(q): _dec(f"{at}.images.{size}.{q}", v) for q, v in qualities.items()
                        }
                else:
                    raise PriceError(f"{at}.{key}: unknown key")
            models[str(name)] = price
        return cls(currency=currency, models=models, source=where)

    def cost(self, model: str, usage: Usage) -> Decimal:
        """Exact cost of the usage in currency units (not rounded)."""
        price = self.models.get(model)
        if price is None:
            return Decimal(0)
        cached_rate = price.cached_input if price.cached_input is not None else price.input
        write_rate = price.cache_write if price.cache_write is not None else price.input
        plain_input = max(0, usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens)
        tokens = (
            plain_input * price.input
            + usage.cached_input_tokens * cached_rate
            + usage.cache_write_tokens * write_rate
            + usage.output_tokens * price.output
        ) / MICRO
        images = usage.images * price.image_price(usage.image_size, usage.image_quality)
        return tokens + images

    def to_mapping(self) -> dict[str, Any]:
        """The sheet as a YAML-ready mapping (prices as strings)."""
        models: dict[str, Any] = {}
        for name, p in self.models.items():
            spec: dict[str, Any] = {"input": str(p.input), "output": str(p.output)}
            if p.cached_input is not None:
                spec["cached_input"] = str(p.cached_input)
            if p.cache_write is not None:
                spec["cache_write"] = str(p.cache_write)
            if p.images:
                spec["images"] = {s: {q: str(v) for q, v in qs.items()} for s, qs in p.images.items()}
            models[name] = spec
        return {"version": 1, "currency": self.currency, "models": models}


def to_micros(amount: Decimal) -> int:
    """Currency units to integer micro-units, rounded half-up."""
    return int((amount * MICRO).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def load_price_sheet(path: str | Path) -> PriceSheet:
    """Read and validate a price sheet YAML file."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PriceError(f"{p}: cannot read the price sheet: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PriceError(f"{p}: not a valid YAML price sheet: {type(exc).__name__}") from None
    return PriceSheet.from_mapping(data, where=str(p))
