"""A LiteLLM proxy callback that writes what LiteLLM charged for each call, one JSON line per call.

LiteLLM prices every call it proxies (`response_cost`), but without a database it keeps no
ledger, and for streams it sends no `x-litellm-response-cost` header at all. This callback is
that ledger: ttbench's billing audit can read it beside the client's records, joined on
`request_id`, which is the `x-litellm-call-id` response header the client saw.

How to use it with your own LiteLLM proxy (see `litellm-config.example.yaml` beside this file):

1. Copy this file next to your LiteLLM `config.yaml` as `ttbench_cost_log.py` (LiteLLM loads a
   callback `module.instance` from a `module.py` in the config file's folder).
2. In the config: `litellm_settings: {callbacks: ttbench_cost_log.cost_logger}`.
3. Set `TTBENCH_COST_LOG=/path/to/litellm-cost-log.jsonl` in LiteLLM's environment (default:
   `litellm-cost-log.jsonl` in LiteLLM's working directory). Lines are appended and flushed one
   by one, so the file can be read while LiteLLM runs.

Each line has exactly these keys:

- `time`: epoch seconds when the call ended
- `request_id`: LiteLLM's call id (`x-litellm-call-id`)
- `status`: `success` or `failure`
- `model`: the public model name the client asked for (LiteLLM's model group)
- `amount`: LiteLLM's `response_cost` as a decimal string (`"0"` for failures or when unpriced)
- `input_tokens`, `output_tokens`, `cached_input_tokens`: from the usage in the response
  (input includes cached tokens); null when the response carries no usage
- `client_attempt_id`, `idempotency_key`: the client's `X-Client-Attempt-ID` and
  `Idempotency-Key` request headers, null when absent
- `upstream_request_id`: the upstream's `x-tt-request-id` (else `x-request-id` / `request-id`)
  response header, null when LiteLLM does not expose it (e.g. its Gemini routes)
- `endpoint`: LiteLLM's call type (`acompletion`, `anthropic_messages`, `agenerate_content`,
  `agenerate_content_stream`, `aembedding`, `aimage_generation`, ...)

No API key and no prompt or response text is ever written.

ttbench itself never imports this module: only LiteLLM does, so `litellm` is needed only in
the environment LiteLLM runs in.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

log = logging.getLogger("ttbench_cost_log")

#: The environment variable naming the JSON Lines file, and its default.
ENV_PATH = "TTBENCH_COST_LOG"
DEFAULT_PATH = "litellm-cost-log.jsonl"

#: Upstream response headers that carry the upstream's request id, best first.
UPSTREAM_ID_HEADERS = ("x-tt-request-id", "x-request-id", "request-id")

_KEYS = ("time", "request_id", "status", "model", "amount", "input_tokens", "output_tokens",
         "cached_input_tokens", "client_attempt_id", "idempotency_key", "upstream_request_id", "endpoint")


def _get(obj: Any, key: str) -> Any:
    """`obj[key]` for a mapping, `obj.key` for an object, else None."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _int(value: Any) -> int | None:
    """An int, or None for anything that is not a number."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def decimal_string(cost: Any) -> str:
    """A cost as a plain decimal string (no exponent); "0" for None or junk."""
    if cost is None or isinstance(cost, bool):
        return "0"
    try:
        value = Decimal(repr(cost)) if isinstance(cost, float) else Decimal(str(cost))
    except (InvalidOperation, ValueError):
        return "0"
    if not value.is_finite():
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def usage_counts(response_obj: Any) -> tuple[int | None, int | None, int | None]:
    """(input, output, cached input) tokens from a response's usage, in any dialect LiteLLM returns."""
    usage = _get(response_obj, "usage")
    if usage is None:
        meta = _get(response_obj, "usageMetadata")  # a raw Gemini body
        if meta is None:
            return None, None, None
        out = _int(_get(meta, "candidatesTokenCount"))
        thoughts = _int(_get(meta, "thoughtsTokenCount"))
        if out is not None and thoughts:
            out += thoughts
        return _int(_get(meta, "promptTokenCount")), out, _int(_get(meta, "cachedContentTokenCount"))
    if _get(usage, "prompt_tokens") is not None:  # OpenAI shape (LiteLLM's own Usage)
        details = _get(usage, "prompt_tokens_details")
        cached = _int(_get(details, "cached_tokens"))
        if cached is None:
            cached = _int(_get(usage, "cache_read_input_tokens"))
        return _int(_get(usage, "prompt_tokens")), _int(_get(usage, "completion_tokens")), cached
    if _get(usage, "input_tokens") is not None:  # Anthropic or images shape
        inp = _int(_get(usage, "input_tokens"))
        read = _int(_get(usage, "cache_read_input_tokens"))
        write = _int(_get(usage, "cache_creation_input_tokens"))
        if inp is not None:
            inp += (read or 0) + (write or 0)
        return inp, _int(_get(usage, "output_tokens")), read
    return None, None, None


def _lower_keys(headers: Any) -> dict[str, str]:
    """A header mapping with lower-case names (empty for anything else)."""
    if not isinstance(headers, Mapping) and not hasattr(headers, "items"):
        return {}
    try:
        return {str(k).lower(): str(v) for k, v in headers.items()}
    except Exception:  # noqa: BLE001 - a header object we do not know: no headers
        return {}


def client_headers(kwargs: Mapping[str, Any]) -> dict[str, str]:
    """The client's request headers as LiteLLM's proxy recorded them (credentials already redacted)."""
    params = kwargs.get("litellm_params") or {}
    for meta_key in ("metadata", "litellm_metadata"):
        headers = _lower_keys(_get(params.get(meta_key), "headers"))
        if headers:
            return headers
    for source in (params.get("proxy_server_request"), kwargs.get("proxy_server_request")):
        headers = _lower_keys(_get(source, "headers"))
        if headers:
            return headers
    return {}


def upstream_request_id(kwargs: Mapping[str, Any], response_obj: Any) -> str | None:
    """The upstream's request id from its response headers, wherever LiteLLM kept them."""
    hidden = getattr(response_obj, "_hidden_params", None) or {}
    standard = kwargs.get("standard_logging_object") or {}
    exc = kwargs.get("exception")
    candidates: list[tuple[str, Any]] = [
        ("", kwargs.get("response_headers")),
        ("", _get(hidden, "headers")),
        ("llm_provider-", _get(hidden, "additional_headers")),
        ("llm_provider-", _get(_get(standard, "hidden_params"), "additional_headers")),
        ("", getattr(exc, "litellm_response_headers", None)),
        ("", getattr(exc, "headers", None)),
        ("", _get(getattr(exc, "response", None), "headers")),
    ]
    for prefix, headers in candidates:
        lowered = _lower_keys(headers)
        for name in UPSTREAM_ID_HEADERS:
            value = lowered.get(prefix + name)
            if value:
                return value
    return None


def _end_epoch(kwargs: Mapping[str, Any], end_time: Any) -> float:
    """The call's end as epoch seconds."""
    standard = kwargs.get("standard_logging_object") or {}
    end = standard.get("endTime") if isinstance(standard, Mapping) else None
    if isinstance(end, int | float) and not isinstance(end, bool):
        return float(end)
    if hasattr(end_time, "timestamp"):
        try:
            return float(end_time.timestamp())
        except (OverflowError, OSError, ValueError):
            pass
    return time.time()


def _public_model(kwargs: Mapping[str, Any]) -> str | None:
    """The model name the client asked for."""
    standard = kwargs.get("standard_logging_object") or {}
    params = kwargs.get("litellm_params") or {}
    for value in (_get(standard, "model_group"), _get(params.get("metadata"), "model_group"),
                  _get(params.get("litellm_metadata"), "model_group"), kwargs.get("model")):
        if isinstance(value, str) and value:
            return value
    return None


def cost_record(kwargs: Mapping[str, Any], response_obj: Any, end_time: Any, success: bool) -> dict[str, Any]:
    """The JSON line for one call."""
    headers = client_headers(kwargs)
    inp, out, cached = usage_counts(response_obj) if success else (None, None, None)
    call_id = kwargs.get("litellm_call_id")
    record = {
        "time": _end_epoch(kwargs, end_time),
        "request_id": str(call_id) if call_id else None,
        "status": "success" if success else "failure",
        "model": _public_model(kwargs),
        "amount": decimal_string(kwargs.get("response_cost")) if success else "0",
        "input_tokens": inp,
        "output_tokens": out,
        "cached_input_tokens": cached,
        "client_attempt_id": headers.get("x-client-attempt-id"),
        "idempotency_key": headers.get("idempotency-key"),
        "upstream_request_id": upstream_request_id(kwargs, response_obj),
        "endpoint": kwargs.get("call_type"),
    }
    return {k: record[k] for k in _KEYS}


class CostLogger(CustomLogger):
    """Appends one JSON line per proxied call to the file named by `TTBENCH_COST_LOG`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # LiteLLM runs both the sync and the async hook for some failures (e.g. auth errors):
        # the same (call id, status) is written once
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def _write(self, kwargs: Any, response_obj: Any, end_time: Any, success: bool) -> None:
        try:
            record = cost_record(kwargs or {}, response_obj, end_time, success)
            if record["request_id"] is not None:
                key = (record["request_id"], record["status"])
                if key in self._seen:
                    return
                self._seen[key] = None
                while len(self._seen) > 10000:
                    self._seen.popitem(last=False)
            line = json.dumps(record, separators=(",", ":")) + "\n"
            with open(os.environ.get(ENV_PATH) or DEFAULT_PATH, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
        except Exception:  # noqa: BLE001 - a logging callback must never fail the call it logs
            log.exception("ttbench cost log: could not write a line")

    def log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        """Log a successful call (sync hook)."""
        self._write(kwargs, response_obj, end_time, True)

    def log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        """Log a failed call (sync hook)."""
        self._write(kwargs, response_obj, end_time, False)

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        """Log a successful call (async hook, what the proxy runs)."""
        self._write(kwargs, response_obj, end_time, True)

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        """Log a failed call (async hook, what the proxy runs)."""
        self._write(kwargs, response_obj, end_time, False)


#: The instance LiteLLM's config names: `callbacks: ttbench_cost_log.cost_logger`.
cost_logger = CostLogger()
