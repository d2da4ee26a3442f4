"""The ttbench command line: thin wiring over the simulator, the load generator and the analysis."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import Any


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit code 2."""


LOOPS = ("asyncio", "uvloop")


def run_loop(main: Coroutine[Any, Any, None], loop: str) -> None:
    """Run a coroutine to completion on the event loop named (asyncio's own, or uvloop)."""
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            main.close()
            raise UsageError("--loop uvloop: uvloop is not installed (pip install uvloop)") from None
        uvloop.run(main)
        return
    asyncio.run(main)


def _sim(args: argparse.Namespace) -> int:
    from gatewaysim.config import ConfigError, load_config
    from gatewaysim.ledger import LedgerError
    from gatewaysim.server import require_client_certs, serve_forever, tls_context
    from gatewaysim.state import DEFAULT_ADMIN_TOKEN, DEFAULT_API_KEY, Gateway

    if args.loop not in LOOPS:  # argparse checks --loop, not the default from $TTBENCH_SIM_LOOP
        raise UsageError(f"--loop (or TTBENCH_SIM_LOOP): expected one of {', '.join(LOOPS)}, got {args.loop!r}")
    try:
        config = load_config(args.config, seed=args.seed)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        raise UsageError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS)")
    ssl_ctx = None
    if args.tls_cert:
        try:
            ssl_ctx = tls_context(args.tls_cert, args.tls_key)
        except (OSError, ValueError) as exc:
            raise UsageError(f"{args.tls_cert}: cannot load the TLS certificate and key: {exc}") from None
        if args.tls_client_ca:
            try:
                require_client_certs(ssl_ctx, args.tls_client_ca)
            except (OSError, ValueError) as exc:
                raise UsageError(f"{args.tls_client_ca}: cannot load the client CA certificates: "
                                 f"{getattr(exc, 'strerror', None) or exc}") from None
    api_key = args.api_key or os.environ.get("TT_API_KEY") or DEFAULT_API_KEY
    try:
        gw = Gateway(config, api_key=api_key, admin_token=args.admin_token or DEFAULT_ADMIN_TOKEN,
                     ledger_path=args.ledger, truth_path=args.truth)
    except (LedgerError, ConfigError) as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:  # the truth file (or the temporary folder) cannot be written
        raise UsageError(f"{exc.filename}: cannot open for writing: {exc.strerror or exc}") from None
    try:
        run_loop(serve_forever(gw, args.host, args.port, ssl_ctx), args.loop)
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    return 0


def _run(args: argparse.Namespace) -> int:
    from .run import RunError, run

    try:
        return run(args)
    except RunError as exc:
        raise UsageError(str(exc)) from None


def _report(args: argparse.Namespace) -> int:
    from analysis.load import InputError
    from analysis.report import analyze

    from .summary import print_summary

    try:
        summary, rc = analyze(args.run_dir, ledger=args.ledger, prices=args.prices, ledger_token=args.ledger_token,
                              ledger_mapping=args.ledger_mapping, ledger_headers=args.ledger_header,
                              ledger_header_envs=args.ledger_header_env)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    print_summary(summary, args.run_dir)
    return rc


def _compare(args: argparse.Namespace) -> int:
    from analysis.compare import Thresholds, compare, render
    from analysis.load import InputError

    positional = [d for d in (args.base_run, args.new_run) if d is not None]
    if positional and (args.base or args.new):
        raise UsageError("compare: give BASE NEW, or --base DIR... --new DIR..., not both")
    bases, news = (positional[:1], positional[1:]) if positional else (args.base or [], args.new or [])
    if not bases or not news:
        raise UsageError("compare: expected BASE NEW, or one or more --base DIR and --new DIR")
    try:
        result = compare(bases, news, Thresholds(latency_rel=args.latency_threshold,
                                                 error_rate_abs=args.error_rate_threshold),
                         resampling=args.resampling)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    print(render(result))
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 1 if result["regressions"] else 0


def _tour(args: argparse.Namespace) -> int:
    from .tour import run_tour

    return run_tour(args.config, args.seed)


def _metrics_options(parser: argparse.ArgumentParser) -> None:
    """Live metrics out: the Prometheus endpoint and OpenTelemetry (passed on to Locust)."""
    parser.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                        help="serve live LLM metrics for Prometheus on this port (0 or absent: off)")
    parser.add_argument("--metrics-host", default=None, help="address of the metrics endpoint (default 127.0.0.1)")
    parser.add_argument("--metrics-linger", type=float, default=None, metavar="S",
                        help="keep the endpoint up S seconds after the last record (a last scrape sees the end)")
    parser.add_argument("--otel", action="store_true", help="export Locust's and ttbench's metrics with "
                                                            "OpenTelemetry (configured by OTEL_* variables)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="ttbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("sim", help="run the embedded gateway simulator")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    sim.add_argument("--config", help="simulator YAML merged over the defaults")
    sim.add_argument("--seed", type=int, default=None)
    sim.add_argument("--api-key", default=None, help="default: $TT_API_KEY, else the fixed local key")
    sim.add_argument("--admin-token", default=None)
    sim.add_argument("--ledger", default=None, help="SQLite ledger path (default: from the config)")
    sim.add_argument("--truth", default=None, help="append the truth log to this JSONL file")
    sim.add_argument("--tls-cert", default=None)
    sim.add_argument("--tls-key", default=None)
    sim.add_argument("--tls-client-ca", default=None,
                     help="mutual TLS: require a client certificate signed by a CA in this PEM file")
    sim.add_argument("--loop", choices=LOOPS, default=os.environ.get("TTBENCH_SIM_LOOP", "asyncio"),
                     help="event loop: asyncio (default: $TTBENCH_SIM_LOOP, else asyncio) or uvloop (less CPU a "
                          "paced stream, timers in whole milliseconds)")
    sim.set_defaults(func=_sim)

    run = sub.add_parser("run", help="run a scenario (against the embedded simulator by default)")
    run.add_argument("scenario", help="scenario YAML file")
    run.add_argument("--target", default=None, help="'sim' (default: the scenario's) or the gateway's base URL")
    run.add_argument("-u", "--users", type=int, default=None)
    run.add_argument("-r", "--spawn-rate", type=float, default=None)
    run.add_argument("-t", "--duration", default=None, help="e.g. 30s, 5m")
    run.add_argument("--processes", type=int, default=None, help="Locust worker processes")
    run.add_argument("--out", default=None, help="run folder (default results/<timestamp>-<scenario>)")
    run.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    run.add_argument("--max-spend", type=float, default=None, help="stop once this much is spent")
    run.add_argument("--prices", default=None, help="price sheet for a URL target")
    run.add_argument("--gateway", default=None, help="gateway profile: tt (default), openai-compatible, litellm, "
                                                     "or a YAML file")
    _metrics_options(run)
    run.set_defaults(func=_run)

    ui = sub.add_parser("ui", help="the Locust web UI with ttbench's LLM views, against the simulator by default")
    ui.add_argument("scenario", help="scenario YAML file")
    ui.add_argument("--target", default=None, help="'sim' (default: the scenario's) or the gateway's base URL")
    ui.add_argument("--web-host", default="127.0.0.1")
    ui.add_argument("--web-port", type=int, default=8089)
    ui.add_argument("-u", "--users", type=int, default=None)
    ui.add_argument("-r", "--spawn-rate", type=float, default=None)
    ui.add_argument("-t", "--duration", default=None, help="each run stops by itself after this long")
    ui.add_argument("--processes", type=int, default=None)
    ui.add_argument("--out", default=None)
    ui.add_argument("--insecure", action="store_true")
    ui.add_argument("--max-spend", type=float, default=None)
    ui.add_argument("--prices", default=None)
    ui.add_argument("--gateway", default=None)
    _metrics_options(ui)
    ui.set_defaults(func=_run)

    rep = sub.add_parser("report", help="(re)analyse a run folder: summary.json, report.md, report.html")
    rep.add_argument("run_dir")
    rep.add_argument("--ledger", default=None, help="ledger file (JSONL, JSON or CSV) or URL (e.g. .../_sim/ledger)")
    rep.add_argument("--ledger-mapping", default=None, metavar="NAME|FILE",
                     help="how the ledger reads: tt-sim (default), litellm-spendlogs, litellm-costlog, or a .yaml")
    rep.add_argument("--ledger-token", default=None, help="the simulator's admin token for a ledger URL")
    rep.add_argument("--ledger-header", action="append", default=None, metavar="'NAME: VALUE'",
                     help="a header for a ledger URL (repeatable), e.g. 'Authorization: Bearer ...'")
    rep.add_argument("--ledger-header-env", action="append", default=None, metavar="VAR|NAME=VAR",
                     help="a header for a ledger URL from the environment: VAR holds 'NAME: VALUE', or NAME=VAR "
                          "(VAR holds the value); repeatable")
    rep.add_argument("--prices", default=None, help="price sheet (default: the run folder's prices.yaml)")
    rep.set_defaults(func=_report)

    cmp_ = sub.add_parser("compare", help="compare two runs (or two sets of runs); exit 1 on a regression")
    cmp_.add_argument("base_run", nargs="?", metavar="BASE")
    cmp_.add_argument("new_run", nargs="?", metavar="NEW")
    cmp_.add_argument("--base", action="append", metavar="DIR", help="a base run (repeatable: runs are resampled)")
    cmp_.add_argument("--new", action="append", metavar="DIR", help="a new run (repeatable: runs are resampled)")
    cmp_.add_argument("--resampling", choices=("auto", "block", "runs", "iid"), default="auto",
                      help="auto (default): whole runs for a side of several, else moving blocks of calls")
    cmp_.add_argument("--json", default=None, metavar="FILE", help="also write the comparison as JSON")
    cmp_.add_argument("--latency-threshold", type=float, default=0.10, help="relative increase (default 0.10)")
    cmp_.add_argument("--error-rate-threshold", type=float, default=0.01, help="absolute increase (default 0.01)")
    cmp_.set_defaults(func=_compare)

    tour = sub.add_parser("tour", help="start the simulator and call every endpoint once")
    tour.add_argument("--config", default=None)
    tour.add_argument("--seed", type=int, default=0)
    tour.set_defaults(func=_tour)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: exit 0 ok, 1 gates breached, 2 bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"ttbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
