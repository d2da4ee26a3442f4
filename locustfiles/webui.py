"""LLM views in Locust's web UI, through its own extension points: an extended tab and table, extra routes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runtime import Runtime

STRUCTURE = [
    {"key": "name", "title": "Name"},
    {"key": "calls", "title": "Calls"},
    {"key": "failed", "title": "Failed"},
    {"key": "errors", "title": "Error kinds"},
    {"key": "retries", "title": "Retries"},
    {"key": "ttft_p50", "title": "TTFT p50 (ms, exact)"},
    {"key": "ttft_p95", "title": "TTFT p95 (ms, exact)"},
    {"key": "itl_p50", "title": "ITL p50 (ms)"},
    {"key": "tokens_per_s", "title": "Output tok/s"},
    {"key": "rps", "title": "Calls/s (10 s)"},
    {"key": "in_flight", "title": "In flight"},
    {"key": "estimate_total", "title": "Dry-run estimates"},
]


def install(environment: Any, rt: Runtime) -> None:
    """Add the LLM tab, its live table, the records download and the report link to the web UI."""
    web_ui = environment.web_ui
    if web_ui is None:
        return
    from flask import Response, request

    web_ui.template_args["extended_tabs"] = [{"title": "LLM", "key": "llm"}]
    web_ui.template_args["extended_tables"] = [{"key": "llm", "structure": STRUCTURE}]
    web_ui.template_args["extended_csv_files"] = [
        {"href": "/ttbench/records.jsonl", "title": "ttbench per-attempt records (JSONL)"},
        {"href": "/ttbench/report", "title": "ttbench report (written when a run stops)"},
    ]
    auth = getattr(web_ui, "auth_required_if_enabled", lambda f: f)

    def rows() -> list[dict[str, Any]]:
        out = rt.live.rows(rt.in_flight())
        if rt.report_ready():
            out.append({"name": "Report", "calls": "", "errors": "/ttbench/report"})
        elif rt.report_running:
            out.append({"name": "Report", "calls": "", "errors": "being written..."})
        return out

    @web_ui.app.after_request
    def _extend(response: Any) -> Any:
        if request.path == "/stats/requests" and response.is_json:
            data = response.get_json()
            data["extended_stats"] = [{"key": "llm", "data": rows()}]
            response.set_data(json.dumps(data))
        return response

    @web_ui.app.route("/ttbench/live.json")
    @auth
    def _live() -> Any:
        return Response(json.dumps({"overall": rt.live.snapshot(), "rows": rows(), "in_flight": rt.in_flight(),
                                    "report": "/ttbench/report" if rt.report_ready() else None}),
                        mimetype="application/json")

    @web_ui.app.route("/ttbench/records.jsonl")
    @auth
    def _records() -> Any:
        path = rt.out_dir / "records.jsonl" if rt.out_dir else None
        if path is None or not Path(path).exists():
            return Response("no records yet\n", status=404, mimetype="text/plain")
        return Response(Path(path).read_bytes(), mimetype="application/x-ndjson")

    @web_ui.app.route("/ttbench/report")
    @auth
    def _report() -> Any:
        if not rt.report_ready():
            return Response("The report is written when the run stops.\n", status=404, mimetype="text/plain")
        assert rt.out_dir is not None
        return Response((rt.out_dir / "report.html").read_bytes(), mimetype="text/html")
