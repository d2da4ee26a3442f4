"""OpenAI Responses: POST /v1/responses, plain and SSE with typed events; stored responses for
`previous_response_id`; the OpenAI error shape.

A stored response keeps its conversation (its input items and output items, without `instructions`, as the
prefix cache sees them), so a follow-up's input counts the whole conversation, exactly as if the client had
sent those items itself.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..appkeys import GW_KEY
from ..cache import segment
from ..calls import BadRequest, Call, Frame, Plan
from ..textgen import count_texts
from .base import Route, content_key, sse, texts_of, want_bool
from .openai import OpenAIBase

if TYPE_CHECKING:
    from ..state import Gateway

#: The real API refuses a smaller `max_output_tokens`.
MIN_OUTPUT_TOKENS = 16
#: Stored responses kept for `previous_response_id`; the oldest are forgotten first.
MAX_STORED = 10_000
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
SUMMARIES = ("auto", "concise", "detailed")
ROLES = ("user", "assistant", "system", "developer")
ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning")
SERVER_ERROR = "The server had an error while processing your request."


@dataclass
class Stored:
    """A stored response: its model and conversation (input items, then output items)."""

    model: str
    conversation: list[tuple[str, int]]


class ResponseStore:
    """Stored responses by id, the oldest forgotten beyond `limit`."""

    def __init__(self, limit: int = MAX_STORED) -> None:
        self.limit = limit
        self._items: OrderedDict[str, Stored] = OrderedDict()

    def get(self, response_id: str) -> Stored | None:
        """The stored response, or None."""
        return self._items.get(response_id)

    def put(self, response_id: str, stored: Stored) -> None:
        """Store a response."""
        self._items[response_id] = stored
        while len(self._items) > self.limit:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def _bad(message: str, param: str | None, code: str | None = None) -> BadRequest:
    return BadRequest(message, param=param, code=code)


def _texts(value: Any, param: str) -> list[str]:
    if not isinstance(value, str | list):
        raise _bad(f"Invalid type for '{param}': expected a string or an array of content parts.", param,
                   "invalid_type")
    return texts_of(value)


def item_segment(item: Any, param: str) -> tuple[str, int]:
    """One input or output item as the prefix cache sees it: (segment, tokens)."""
    if not isinstance(item, dict):
        raise _bad(f"Invalid type for '{param}': expected an input item object.", param, "invalid_type")
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in ROLES:
            raise _bad(f"Invalid value for '{param}.role': expected one of {', '.join(ROLES)}.", f"{param}.role",
                       "invalid_value")
        texts = _texts(item.get("content"), f"{param}.content")
    elif kind == "function_call":
        name, arguments = item.get("name"), item.get("arguments")
        if not isinstance(name, str) or not isinstance(arguments, str):
            raise _bad(f"Missing required parameter: '{param}.name' and '{param}.arguments' (strings).", param,
                       "missing_required_parameter")
        role, texts = "function_call", [name, arguments]
    elif kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise _bad(f"Missing required parameter: '{param}.call_id'.", f"{param}.call_id",
                       "missing_required_parameter")
        role, texts = "function_call_output", _texts(item.get("output"), f"{param}.output")
    elif kind == "reasoning":
        role, texts = "reasoning", texts_of(item.get("summary") or [])
    else:
        raise _bad(f"Invalid value: '{kind}'. Supported values are: {', '.join(repr(t) for t in ITEM_TYPES)}.",
                   f"{param}.type", "invalid_value")
    return segment(role, texts), count_texts(texts)


class Responses(OpenAIBase):
    """The Responses API."""

    endpoint = "responses"
    routes = (Route("POST", "/v1/responses"),)
    configurable = True

    def store(self, gw: Gateway) -> ResponseStore:
        """The gateway's stored responses."""
        store = gw.dialect_state.get(self.endpoint)
        if store is None:
            store = gw.dialect_state[self.endpoint] = ResponseStore()
        return store

    def parse(self, body: Any, request: web.Request) -> Call:
        """Validate a Responses request; a `previous_response_id` must name a stored response."""
        if not isinstance(body, dict):
            raise _bad("The request body must be a JSON object.", None)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _bad("Missing required parameter: 'model'.", "model", "missing_required_parameter")
        raw_input = body.get("input")
        if isinstance(raw_input, str) and raw_input:
            conversation = [(segment("user", [raw_input]), count_texts([raw_input]))]
        elif isinstance(raw_input, list) and raw_input:
            conversation = [item_segment(item, f"input[{i}]") for i, item in enumerate(raw_input)]
        else:
            raise _bad("Missing required parameter: 'input' (a non-empty string or array of input items).", "input",
                       "missing_required_parameter")
        previous_id = body.get("previous_response_id")
        if previous_id is not None:
            stored = self.store(request.app[GW_KEY]).get(previous_id) if isinstance(previous_id, str) else None
            if stored is None:
                raise _bad(f"Previous response with id '{previous_id}' not found.", "previous_response_id",
                           "previous_response_not_found")
            conversation = stored.conversation + conversation
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise _bad("Invalid type for 'instructions': expected a string.", "instructions", "invalid_type")
        segments = list(conversation)
        if instructions:
            segments.insert(0, (segment("system", [instructions]), count_texts([instructions])))
        cap = body.get("max_output_tokens")
        if cap is not None:
            if not isinstance(cap, int) or isinstance(cap, bool):
                raise _bad("Invalid type for 'max_output_tokens': expected an integer.", "max_output_tokens",
                           "invalid_type")
            if cap < MIN_OUTPUT_TOKENS:
                raise _bad("Invalid 'max_output_tokens': integer below minimum value. Expected a value >= "
                           f"{MIN_OUTPUT_TOKENS}, but got {cap} instead.", "max_output_tokens",
                           "integer_below_min_value")
        tools, force = self._tools(body)
        effort, summary = self._reasoning(body.get("reasoning"))
        store = body.get("store", True)
        if not isinstance(store, bool):
            raise _bad("Invalid type for 'store': expected a boolean.", "store", "invalid_type")
        return Call(
            endpoint=self.endpoint,
            model=model,
            stream=want_bool(body, "stream"),
            input_tokens=max(1, sum(tokens for _, tokens in segments)),
            max_tokens=cap,
            ignore_eos=want_bool(body, "ignore_eos"),
            tools=tools,
            force_tool=force,
            reasoning=effort is not None and effort not in ("none", "minimal"),
            content_key=content_key(body, model),
            segments=segments,
            extra={
                "conversation": conversation,
                "store": store,
                "summary": summary is not None,
                "instructions": instructions,
                "previous_response_id": previous_id,
                "max_output_tokens": cap,
                "reasoning": {"effort": effort, "summary": summary},
                "tools": body.get("tools") or [],
                "tool_choice": body.get("tool_choice", "auto"),
            },
        )

    @staticmethod
    def _tools(body: dict[str, Any]) -> tuple[list[str], str | None]:
        """Function tool names, and the tool a forcing `tool_choice` names."""
        raw = body.get("tools")
        tools: list[str] = []
        if raw is not None:
            if not isinstance(raw, list):
                raise _bad("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
            for i, t in enumerate(raw):
                if not isinstance(t, dict) or not isinstance(t.get("type"), str):
                    raise _bad(f"Missing required parameter: 'tools[{i}].type'.", f"tools[{i}].type",
                               "missing_required_parameter")
                if t["type"] != "function":
                    continue  # hosted tools are accepted and never called
                if not isinstance(t.get("name"), str) or not t["name"]:
                    raise _bad(f"Missing required parameter: 'tools[{i}].name'.", f"tools[{i}].name",
                               "missing_required_parameter")
                tools.append(t["name"])
        choice = body.get("tool_choice")
        if choice == "none":
            return [], None
        if tools and choice == "required":
            return tools, tools[0]
        if tools and isinstance(choice, dict) and choice.get("type") == "function":
            name = choice.get("name")
            if name not in tools:
                raise _bad(f"Tool choice '{name}' not found in 'tools' parameter.", "tool_choice", "invalid_value")
            return tools, name
        return tools, None

    @staticmethod
    def _reasoning(raw: Any) -> tuple[str | None, str | None]:
        """(effort, summary) of a `reasoning` object; effort defaults to medium when the object is sent."""
        if raw is None:
            return None, None
        if not isinstance(raw, dict):
            raise _bad("Invalid type for 'reasoning': expected an object.", "reasoning", "invalid_type")
        effort = raw.get("effort") or "medium"
        if effort not in EFFORTS:
            raise _bad(f"Invalid value: '{effort}'. Supported values are: {', '.join(map(repr, EFFORTS))}.",
                       "reasoning.effort", "invalid_value")
        summary = raw.get("summary") or raw.get("generate_summary")
        if summary is not None and summary not in SUMMARIES:
            raise _bad(f"Invalid value: '{summary}'. Supported values are: {', '.join(map(repr, SUMMARIES))}.",
                       "reasoning.summary", "invalid_value")
        return effort, summary

    # ------------------------------------------------------------------------------------------ rendering

    @staticmethod
    def _ids(ctx: dict[str, Any]) -> dict[str, str]:
        tail = ctx["request_id"].removeprefix("req_")
        return {"response": "resp_" + tail, "message": "msg_" + tail, "reasoning": "rs_" + tail,
                "function_call": "fc_" + tail}

    def usage(self, plan: Plan) -> dict[str, Any]:
        """The usage object: cached tokens inside input_tokens, reasoning tokens inside output_tokens."""
        return {
            "input_tokens": plan.input_tokens,
            "input_tokens_details": {"cached_tokens": plan.cached_input_tokens, "cache_write_tokens": 0},
            "output_tokens": plan.output_tokens,
            "output_tokens_details": {"reasoning_tokens": plan.reasoning_tokens},
            "total_tokens": plan.input_tokens + plan.output_tokens,
        }

    def _response(self, call: Call, ctx: dict[str, Any], status: str, output: list[dict[str, Any]],
                  usage: dict[str, Any] | None, error: dict[str, Any] | None = None) -> dict[str, Any]:
        ex = call.extra
        return {
            "id": self._ids(ctx)["response"],
            "object": "response",
            "created_at": ctx["created"],
            "status": status,
            "background": False,
            "error": error,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": ex["instructions"],
            "max_output_tokens": ex["max_output_tokens"],
            "model": call.model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": ex["previous_response_id"],
            "reasoning": ex["reasoning"],
            "service_tier": "default",
            "store": ex["store"],
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": ex["tool_choice"],
            "tools": ex["tools"],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "metadata": {},
        }

    @staticmethod
    def _status(plan: Plan) -> str:
        return "incomplete" if plan.finish == "length" else "completed"

    def _reasoning_item(self, call: Call, plan: Plan, ctx: dict[str, Any], done: bool) -> dict[str, Any]:
        summary = ([{"type": "summary_text", "text": plan.text("reasoning")}] if done and call.extra["summary"]
                   else [])
        return {"id": self._ids(ctx)["reasoning"], "type": "reasoning", "summary": summary,
                "status": "completed" if done else "in_progress"}

    def _call_item(self, plan: Plan, ctx: dict[str, Any], done: bool) -> dict[str, Any]:
        return {"id": self._ids(ctx)["function_call"], "type": "function_call",
                "status": "completed" if done else "in_progress", "call_id": plan.tool_call_id,
                "name": plan.tool_name, "arguments": plan.tool_args if done else ""}

    def _message_item(self, plan: Plan, ctx: dict[str, Any], done: bool) -> dict[str, Any]:
        content = [self._text_part(plan.text())] if done else []
        return {"id": self._ids(ctx)["message"], "type": "message", "status": self._status(plan) if done
                else "in_progress", "role": "assistant", "content": content}

    @staticmethod
    def _text_part(text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def output(self, call: Call, plan: Plan, ctx: dict[str, Any]) -> list[dict[str, Any]]:
        """The finished output items: reasoning (if any), then a function call or a message."""
        items = [self._reasoning_item(call, plan, ctx, True)] if plan.reasoning_tokens else []
        items.append(self._call_item(plan, ctx, True) if plan.tool_name else self._message_item(plan, ctx, True))
        return items

    def render(self, call: Call, plan: Plan, ctx: dict[str, Any]) -> dict[str, Any]:
        """A response object."""
        return self._response(call, ctx, self._status(plan), self.output(call, plan, ctx), self.usage(plan))

    def frames(self, call: Call, plan: Plan, ctx: dict[str, Any]) -> list[Frame]:
        """Typed events, each with `event:` and a numbered `data:`; ends with response.completed/.incomplete."""
        out: list[Frame] = []

        def ev(kind: str, tokens: int = 0, **fields: Any) -> None:
            out.append(Frame(sse({"type": kind, "sequence_number": len(out), **fields}, event=kind), tokens))

        ids = self._ids(ctx)
        ev("response.created", response=self._response(call, ctx, "in_progress", [], None))
        ev("response.in_progress", response=self._response(call, ctx, "in_progress", [], None))
        index = 0
        if plan.reasoning_tokens:
            rid = ids["reasoning"]
            ev("response.output_item.added", output_index=index, item=self._reasoning_item(call, plan, ctx, False))
            hidden = plan.reasoning_tokens
            if call.extra["summary"]:
                hidden = 0
                where = {"item_id": rid, "output_index": index, "summary_index": 0}
                ev("response.reasoning_summary_part.added", **where, part={"type": "summary_text", "text": ""})
                for p in plan.pieces:
                    if p.kind == "reasoning":
                        ev("response.reasoning_summary_text.delta", 1, **where, delta=p.text)
                text = plan.text("reasoning")
                ev("response.reasoning_summary_text.done", **where, text=text)
                ev("response.reasoning_summary_part.done", **where, part={"type": "summary_text", "text": text})
            # Unsummarised reasoning still takes decode time: its tokens ride with the item's end.
            ev("response.output_item.done", hidden, output_index=index, item=self._reasoning_item(call, plan, ctx, True))
            index += 1
        if plan.tool_name:
            where = {"item_id": ids["function_call"], "output_index": index}
            ev("response.output_item.added", 1, output_index=index, item=self._call_item(plan, ctx, False))
            for p in plan.pieces:
                if p.kind == "tool_args":
                    ev("response.function_call_arguments.delta", 1, **where, delta=p.text)
            ev("response.function_call_arguments.done", **where, name=plan.tool_name, arguments=plan.tool_args)
            ev("response.output_item.done", output_index=index, item=self._call_item(plan, ctx, True))
        else:
            where = {"item_id": ids["message"], "output_index": index, "content_index": 0}
            ev("response.output_item.added", output_index=index, item=self._message_item(plan, ctx, False))
            ev("response.content_part.added", **where, part=self._text_part(""))
            for p in plan.pieces:
                if p.kind == "text":
                    ev("response.output_text.delta", 1, **where, delta=p.text, logprobs=[])
            text = plan.text()
            ev("response.output_text.done", **where, text=text, logprobs=[])
            ev("response.content_part.done", **where, part=self._text_part(text))
            ev("response.output_item.done", output_index=index, item=self._message_item(plan, ctx, True))
        status = self._status(plan)
        ev("response.completed" if status == "completed" else "response.incomplete",
           response=self.render(call, plan, ctx))
        return out

    def inband_error(self, call: Call, ctx: dict[str, Any], sent: int) -> bytes:
        """An `error` event (its `error` object makes the openai SDK raise APIError), then `response.failed`."""
        error = {"type": "error", "sequence_number": sent,
                 "error": {"type": "server_error", "code": "server_error", "message": SERVER_ERROR, "param": None}}
        failed = {"type": "response.failed", "sequence_number": sent + 1,
                  "response": self._response(call, ctx, "failed", [], None,
                                             error={"code": "server_error", "message": SERVER_ERROR})}
        return sse(error, event="error") + sse(failed, event="response.failed")

    def malformed(self, call: Call) -> bytes:
        """An output_text.delta event whose JSON is cut."""
        return b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"\xff\n\n'

    def completed(self, gw: Gateway, call: Call, plan: Plan, ctx: dict[str, Any]) -> None:
        """Store the response (unless `store: false`) for a later `previous_response_id`."""
        if not call.extra["store"]:
            return
        outputs = [item_segment(item, "output") for item in self.output(call, plan, ctx)]
        self.store(gw).put(self._ids(ctx)["response"], Stored(call.model, call.extra["conversation"] + outputs))
