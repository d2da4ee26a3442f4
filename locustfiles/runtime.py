"""Per-process state of a ttbench Locust run, wired to Locust through its events and messages."""

from __future__ import annotations

import csv
import gc
import json
import os
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.event
from locust import events
from locust.runners import WORKER_REPORT_INTERVAL, LocalRunner, MasterRunner, WorkerRunner

from ttformats.calls import call_e2e_ms, call_ttft_ms, counts_as_attempt
from ttformats.prices import PriceError, PriceSheet, load_price_sheet
from ttformats.records import FULL_KEYS, expand
from ttformats.sweep import rule_of

from .arrivals import Split
from .baseline import Overhead
from .caller import Caller
from .calls import CallSpec
from .dialects import TEXT_ENDPOINTS
from .guards import EXIT_BAD_INPUT, EXIT_OK, EXIT_REFUSED_MID_RUN, Hopeless
from .live import Live
from .profile import ProfileError
from .prompts import Calibrator
from .records import FLUSH_INTERVAL_S, RecordSink, summarise
from .retry import BudgetPool, LeasedBudget, RetryBudget
from .scenario import Scenario, ScenarioError, gateway_profile, load_scenario
from .scrape import Scraper
from .shipping import QUEUE_S, Shipper, window
from .spend import SpendCap, SpendPool, unpriced_models
from .sweep import SweepWatch
from .telemetry import Telemetry
from .tenants import Tenant, TenantError, Tenants
from .workers import CpuMeter, Workers
from .workload import Workload

SHIPPED_PRICES = Path(__file__).resolve().parent.parent / "gatewaysim" / "defaults" / "prices.yaml"
MSG_RECORDS = "ttbench_records"
MSG_RECORDS_ACK = "ttbench_records_ack"
MSG_WORKERS = "ttbench_workers"
MSG_SPLIT_ASK = "ttbench_split_ask"
MSG_STOP = "ttbench_stop"
MSG_BUDGET_ASK = "ttbench_budget_ask"
MSG_BUDGET_GRANT = "ttbench_budget_grant"
MSG_SPEND_ASK = "ttbench_spend_ask"
MSG_SPEND_GRANT = "ttbench_spend_grant"
#: The master waits this long for records the workers still hold before it gives up on them (each keeps them).
SHIPMENT_STALL_S = 30.0
#: Locust's own TTFT rows: its bucketed histogram (exact figures are in the LLM tab and the report).
TTFT_TYPE = "TTFT (bucketed)"


def fail(message: str) -> None:
    """Bad input: one line on stderr, exit code 2."""
    print(f"ttbench: error: {message}", file=sys.stderr, flush=True)
    os._exit(2)


def add_arguments(parser: Any) -> None:
    """ttbench's options on Locust's command line (also fields in the web UI's start form)."""
    group = parser.add_argument_group("ttbench")
    group.add_argument("--scenario", default=os.environ.get("TTBENCH_SCENARIO"), help="scenario YAML file")
    group.add_argument("--ttbench-out", default=None, help="run folder for records.jsonl (default results/<ts>-<name>)")
    group.add_argument("--run-id", default=None, help="run id used in idempotency keys")
    group.add_argument("--max-spend", type=float, default=None, help="spend cap in the price sheet's currency")
    group.add_argument("--prices", default=None, help="price sheet YAML (default: the simulator's)")
    group.add_argument("--gateway", default=None, help="gateway profile: tt (default), openai-compatible, "
                                                       "litellm, or a YAML file")
    group.add_argument("--insecure", action="store_true", default=False, help="do not verify TLS certificates")
    group.add_argument("--ttbench-duration", type=float, default=None,
                       help="run length in seconds (default: the scenario's); ends with a graceful drain")
    group.add_argument("--ttbench-progress", type=float, default=None, help="seconds between progress lines")


def stop_csv_writer() -> int:
    """Ends Locust's periodic CSV writer greenlets and flushes their files; returns how many it ended.

    Locust's shutdown closes the CSV files without ending the greenlet that rewrites them every second, so a
    greenlet woken during the process's exit fails on a closed file (a traceback in the run's output); ended
    here, at quitting, it also cannot rewrite the final stats CSV written after it.
    """
    ended = 0
    for obj in gc.get_objects():
        if not isinstance(obj, gevent.Greenlet) or obj.dead:
            continue
        run = getattr(obj, "_run", None)
        if getattr(run, "__name__", "") != "stats_writer":
            continue
        obj.kill(block=True)
        writer = getattr(run, "__self__", None)
        for name in ("requests_flush", "stats_history_flush", "failures_flush", "exceptions_flush"):
            flush = getattr(writer, name, None)
            if flush is not None:
                flush()
        ended += 1
    return ended


class Runtime:
    """Everything one Locust process of a ttbench run shares between its users."""

    _instance: Runtime | None = None

    @classmethod
    def get(cls) -> Runtime:
        """The process's runtime (created in Locust's init event)."""
        if cls._instance is None:
            raise RuntimeError("ttbench runtime not initialised: run through locustfiles/gateway.py")
        return cls._instance

    def __init__(self, environment: Any, scenario: Scenario) -> None:
        self.environment = environment
        self.scenario = scenario
        opts = environment.parsed_options
        runner = environment.runner
        self.role = ("master" if isinstance(runner, MasterRunner) else
                     "worker" if isinstance(runner, WorkerRunner) else "local")
        self.worker = int(getattr(runner, "worker_index", 0) or 0) if self.role == "worker" else 0
        self.run_id = opts.run_id or f"{scenario.name}-{int(time.time())}"
        self.insecure = bool(opts.insecure or scenario.insecure)
        self.target = environment.host or (scenario.target if scenario.target != "sim" else "")
        try:
            self.profile = gateway_profile(scenario, opts.gateway) if opts.gateway else scenario.profile
        except ScenarioError as exc:
            fail(str(exc))
        self.hopeless = Hopeless(self.profile)
        self.exit_code = EXIT_OK
        self.dry_runs_ignored = 0
        self.stopping = False
        self.stop_reason: str | None = None
        self.finished_calls = 0
        self.retries_seen = 0
        self.workers = Workers(runner) if self.role == "master" else None
        self.cpu = CpuMeter()
        self.scraper: Scraper | None = None  # `scrape:` targets, read by the local or master process
        self.pending_at_stop = 0  # master: records the workers still held when the users had stopped
        self.report_running = False
        self._report_at = 0.0
        self._started_once = False
        self._clock_greenlet: Any = None
        opts_ = environment.parsed_options
        self.interactive = environment.web_ui is not None and not getattr(opts_, "headless", False)
        self.live = Live()
        self.out_dir: Path | None = None
        self.sink: RecordSink | Shipper | None = None
        self.s_per_record: float | None = None  # master: its time per record shipped to it
        self.arrivals: Any = None
        self.rng = random.Random(f"{scenario.seed}:{self.worker}")
        self.calibrator = Calibrator()
        self.workload = Workload(scenario, self.rng, self.calibrator)
        # open-loop arrivals: this process's share (a worker owns none until the master announces its rank)
        self.split = Split(-1 if self.role == "worker" else 0, 1)
        self.run_start_epoch: float | None = None
        self.announced_duration: float | None = None
        self.sweep: SweepWatch | None = None
        self.early_stop: dict[str, Any] | None = None
        prices_path = opts.prices or str(SHIPPED_PRICES)
        try:
            self.prices: PriceSheet | None = load_price_sheet(prices_path)
        except PriceError as exc:
            fail(str(exc))
        max_spend = opts.max_spend if opts.max_spend is not None else scenario.spend_max
        if max_spend is None and not scenario.spend_money_off and not self._is_local_sim():
            max_spend = 1.0  # a small default against anything but a simulator this run started
        if max_spend is not None and not self._is_local_sim() and self.prices is not None:
            missing = unpriced_models(scenario, self.prices)
            if missing:
                fail(f"{scenario.path}: model {missing[0]} has no price in {prices_path}: the spend cap cannot "
                     "count it (add it to a price sheet passed with --prices, or set spend.max: off with "
                     "spend.max_tokens)")
        self.max_spend = max_spend
        # the run's one cap and one retry budget are held by the master (local runs: by the process); a worker
        # spends a share of the cap leased from the master, and asks for more before it starts a call past it
        self.spend = SpendCap(self.prices, max_spend, scenario.spend_max_tokens, scenario.spend_max_images,
                              share=0.0 if self.role == "worker" else 1.0)
        self.spend_pool = SpendPool() if self.role == "master" else None
        self._spend_event: Any = None
        self.spend_denied = False
        self.spend_in_flight_at_cap: int | None = None
        if self.role in ("local", "master"):
            self.out_dir = Path(opts.ttbench_out or Path("results") / f"{time.strftime('%Y%m%d-%H%M%S')}-{scenario.name}")
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.sink = RecordSink(str(self.out_dir / "records.jsonl"))
        else:
            self.sink = Shipper(self._ship)
        self.api_key = ""
        try:
            self.tenants = Tenants(scenario, self.rng, self.calibrator, self.prices,
                                   share=0.0 if self.role == "worker" else 1.0, need_keys=self.role != "master")
        except TenantError as exc:
            fail(str(exc))
        # the scenario's own key: without tenants, or for the calls no tenant takes
        needs_key = not scenario.tenants or (all(t.arrivals is not None for t in scenario.tenants)
                                             and scenario.arrivals not in ("closed", "tenants"))
        if self.role != "master":
            key = os.environ.get(scenario.api_key_env)
            if not key and needs_key:
                fail(f"{scenario.path}: api_key_env: environment variable {scenario.api_key_env} is not set")
            self.api_key = key or ""
        self.pool = BudgetPool(scenario.retry.budget) if self.role == "master" else None
        budget: RetryBudget = LeasedBudget(self._ask_budget) if self.role == "worker" else \
            RetryBudget(scenario.retry.budget)
        self.budget = budget
        self.caller = Caller(self.run_id, self.worker, self.api_key, scenario.retry, budget, self._emit, self.rng,
                             on_call=self._on_call, profile=self.profile)
        self.caller.on_dry_run_ignored = self._dry_run_ignored
        try:  # gateway overhead: baseline stages straight at the upstream, prompt markers
            self.caller.overhead = Overhead.from_scenario(scenario, self.api_key, need_baseline=self.role != "master")
        except ScenarioError as exc:
            fail(str(exc))
        if (self.role == "worker" and self.spend.capped) or self.tenants:
            self.caller.admit = self.admit
        try:
            ov = self.caller.overhead
            baseline = [] if ov is None or not ov.key else \
                ov.profile.secrets(ov.key) if ov.profile is not None else [ov.key]
            self.secrets = tuple(dict.fromkeys([*self.profile.secrets(self.api_key), *self.tenants.keys(),
                                                *baseline]))
        except ProfileError as exc:
            fail(str(exc))
        # live metrics out (Prometheus, OpenTelemetry): where every record is seen, the local process or the master
        self.telemetry = None if self.role == "worker" else Telemetry.for_runtime(
            opts, self.in_flight, self.prices.currency if self.prices is not None else "USD")

    def admit(self, tenant: Tenant | None = None) -> bool:
        """Whether a call (of a tenant) may start under the run's and the tenant's spend caps; a worker asks the
        master for a further share of both first when its lease is spent (at most 2 s)."""
        if tenant is not None and tenant.quota_refused is not None:
            return False
        if not self.spend.exceeded and (tenant is None or not tenant.spend.exceeded):
            return True
        if self.role != "worker":
            if tenant is not None and not self.spend.exceeded:
                tenant.may_start()  # says once that the tenant's cap is reached
            return False
        if not self.spend_denied:
            if self._spend_event is None:
                self._spend_event = gevent.event.Event()
                self.environment.runner.send_message(MSG_SPEND_ASK, 1)
            event = self._spend_event
            event.wait(2.0)
            if self._spend_event is event:
                self._spend_event = None
        if self.spend.exceeded:
            return False
        if tenant is not None and tenant.spend.exceeded:
            if self.spend_denied:
                tenant.may_start()  # the run's caps are all leased: says once that the tenant's share is spent
            return False
        return True

    def on_spend_grant(self, share: float) -> None:
        """Worker: the master's answer; 0 means the run's cap is all leased."""
        if share <= 0:
            self.spend_denied = True
        else:
            self.spend.set_share(self.spend.share + share)
            self.tenants.set_share(self.spend.share)
        if self._spend_event is not None:
            self._spend_event.set()

    def on_spend_ask(self, node_id: str) -> None:
        """Master: lease a further share of the run's spend cap to a worker."""
        assert self.spend_pool is not None
        share = 0.0 if self.spend.exceeded else self.spend_pool.lease(max(1, len(self.workers.seen) if self.workers else 1))
        self.environment.runner.send_message(MSG_SPEND_GRANT, share, client_id=node_id)

    def _ask_budget(self) -> None:
        self.environment.runner.send_message(MSG_BUDGET_ASK, 1)

    def on_budget_ask(self, node_id: str) -> None:
        """Master: lease a few retries of the run's budget to a worker."""
        assert self.pool is not None
        workers = max(1, len(self.workers.seen) if self.workers else 1)
        self.environment.runner.send_message(MSG_BUDGET_GRANT, self.pool.lease(workers), client_id=node_id)

    def _dry_run_ignored(self) -> None:
        self.dry_runs_ignored += 1
        if not self.workload.dry_runs_off:
            self.workload.dry_runs_off = True
            print("ttbench: warning: the gateway ignored a dry run (it answered with a real completion, which it may "
                  "bill): no more dry runs or pairs are sent in this run", file=sys.stderr, flush=True)

    def _is_local_sim(self) -> bool:
        return os.environ.get("TTBENCH_TARGET_IS_SIM") == "1"

    # records -------------------------------------------------------------------------------
    def _emit(self, rec: dict[str, Any]) -> None:
        assert self.sink is not None
        self.sink.add(summarise(rec) if self.scenario.record_timing == "summary" else rec)
        if self.role == "local":
            self.live.add(rec)
        self._account(rec)

    def _account(self, rec: dict[str, Any]) -> None:
        """A record's share of the run's spend (and of a sweep stage's figures)."""
        if self.sweep is not None:
            self.sweep.add(rec)
        self.spend.add(rec)
        self.tenants.account(rec)
        if self.telemetry is not None:
            self.telemetry.add(rec, self.spend.money)
        if self.role == "worker":
            return  # the master holds the cap: a worker only stops starting calls past its lease
        if not self.stopping and (rec.get("refusal") == "quota" or self.tenants):
            self._stop_when_no_key_can_call(rec)
        if self.spend.exceeded and not self.stopping:
            self.spend_in_flight_at_cap = self.in_flight()
            self.request_stop(self.spend.reason or "spend cap reached")

    def _stop_when_no_key_can_call(self, rec: dict[str, Any]) -> None:
        """Local or master: stop once the gateway refused the key for quota, or every tenant is refused or capped."""
        what = rec.get("error") or rec.get("status")
        if not self.tenants:
            if rec.get("final"):
                self.request_stop(f"the gateway refused the API key for quota: {what}", EXIT_REFUSED_MID_RUN)
            return
        items = self.tenants.items
        if not all(t.quota_refused is not None or t.spend.exceeded for t in items):
            return
        if all(t.quota_refused is not None for t in items):
            self.request_stop(f"the gateway refused every tenant's key for quota: {what}", EXIT_REFUSED_MID_RUN)
        else:
            self.request_stop("every tenant's quota or spend cap is spent")

    def _ship(self, batch: list[dict[str, Any]], counts: dict[str, int]) -> None:
        """Worker: a batch of records (maybe none) with this worker's state: calls in flight, CPU, arrivals, and
        its records still waiting for the master."""
        arr = self.arrivals
        self.environment.runner.send_message(MSG_RECORDS, {
            "records": batch, "in_flight": self.caller.in_flight, "cpu": self.cpu.percent(), "worker": self.worker,
            "arrivals": None if arr is None else [arr.offered, arr.dropped], "shipping": counts})

    def on_shipped(self, data: Any, node_id: str | None = None) -> None:
        """Master: a worker's batch of records and its state."""
        assert self.sink is not None
        batch = data["records"] if isinstance(data, dict) else data
        t0 = time.perf_counter()
        self.sink.write_lines(batch)
        batch = [expand(dict(r)) if len(r) < FULL_KEYS else r for r in batch]  # summary timing: every key back
        for rec in batch:
            self.live.add(rec)
            self._account(rec)
            self.retries_seen += rec["attempt"] > 1 and counts_as_attempt(rec.get("error_kind"), rec.get("sent", True))
        if node_id is not None and self.workers is not None:
            self.workers.shipment(node_id, data, batch)
        if batch and node_id is not None:
            # the master's own time per record (a moving mean) sets how much each worker may have on its way
            per = (time.perf_counter() - t0) / len(batch)
            self.s_per_record = per if self.s_per_record is None else 0.8 * self.s_per_record + 0.2 * per
            workers = len(getattr(self.environment.runner, "clients", {}) or {}) or 1
            self.environment.runner.send_message(MSG_RECORDS_ACK, [len(batch), window(workers, self.s_per_record)],
                                                 client_id=node_id)
            gevent.sleep(0.001)  # a turn of the event loop (timers: the clock, heartbeats) between batches; sleep(0) may not

    def _arrivals_summary(self) -> dict[str, int] | None:
        if self.workers is not None:
            return self.workers.arrivals_summary()
        if self.arrivals is None:
            return None
        return {"offered": self.arrivals.offered, "dropped": self.arrivals.dropped}

    def in_flight(self) -> int:
        """Calls in flight: this process's, or on the master the sum of the workers' last reports."""
        if self.workers is not None:
            return self.workers.in_flight()
        return self.caller.in_flight

    def report_ready(self) -> bool:
        """Whether the report of the last stopped run is written."""
        return (not self.report_running and self.out_dir is not None and (self.out_dir / "report.html").exists()
                and (self.out_dir / "report.html").stat().st_mtime >= self._report_at)

    def write_report(self) -> None:
        """After a run stops in the web UI: analyse the run folder in a child process (keeps gevent free)."""
        if self.out_dir is None or self.report_running:
            return
        import subprocess

        self.report_running = True
        self._report_at = time.time()

        def _run() -> None:
            try:
                assert self.sink is not None
                self.sink.flush()
                proc = subprocess.Popen([sys.executable, "-m", "ttbench", "report", str(self.out_dir)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                while proc.poll() is None:
                    gevent.sleep(0.2)
            finally:
                self.report_running = False

        gevent.spawn(_run)

    def _on_call(self, spec: CallSpec, records: list[dict[str, Any]]) -> None:
        last = records[-1]
        if last.get("error_kind") == "cancelled":
            return  # cut by the harness: kept out of Locust's stats and error rates
        self.finished_calls += 1
        verdict = self.hopeless.observe(last)
        if verdict is not None and not self.stopping:
            self.request_stop(verdict[1], verdict[0])
        first = records[0]
        e2e = call_e2e_ms(first["t_start"], last["t_start"], last["end_ms"])
        exc = None if last["ok"] else RuntimeError(f"{last['error_kind']}: {last.get('error') or ''}")
        method = "GET" if spec.endpoint == "models" else "POST"
        env = self.environment
        env.events.request.fire(request_type=method, name=last["name"], response_time=e2e,
                                response_length=last.get("output_chars") or 0, exception=exc,
                                context={"call_id": last["call_id"]}, start_time=first["t_start"])
        if last["ok"] and last.get("first_content_ms") is not None:
            ttft = call_ttft_ms(first["t_start"], last["t_start"], last["first_content_ms"])
            env.stats.get(last["name"], TTFT_TYPE).log(ttft, 0)
        usage = last.get("usage") or {}
        if last["ok"] and spec.prompt_words and usage.get("input") and spec.messages is None \
                and spec.endpoint in TEXT_ENDPOINTS:
            self.calibrator.update(spec.prompt_words, int(usage["input"]))

    # lifecycle -------------------------------------------------------------------------------
    def request_stop(self, reason: str, code: int = EXIT_OK) -> None:
        """Stop the run cleanly (spend cap, fatal target trouble); `code` is the run's exit code."""
        self.stopping = True
        self.stop_reason = reason
        self.exit_code = max(self.exit_code, code)
        if code == EXIT_BAD_INPUT:
            print(f"ttbench: error: {reason}", file=sys.stderr, flush=True)
        else:
            print(f"ttbench: stopping: {reason}", file=sys.stderr, flush=True)
        runner = self.environment.runner
        if self.role == "worker":
            runner.send_message(MSG_STOP, {"reason": reason, "code": code})
        else:
            gevent.spawn(runner.quit)

    def start(self) -> None:
        """test_start: flusher, arrivals, progress and the run's clock."""
        from .arrivals import Arrivals

        first = not self._started_once
        self._started_once = True
        self.stopping = False
        if self.role in ("local", "master"):
            self.run_start_epoch = time.time()  # schedule time 0 (a worker learns it from the master)
        if self.role != "master":
            if first:
                gevent.spawn(self._flusher)
            if self.scenario.open_loop:
                if self.arrivals is not None:
                    self.arrivals.stop()
                self.arrivals = Arrivals(self.scenario, self.scenario.seed,
                                         duration_s=self.announced_duration or self._duration(), split=self.split)
                if self.role == "local":
                    self.arrivals.start(self.run_start_epoch)
                elif self.run_start_epoch is not None:  # the master's announcement came first
                    self.arrivals.start(self.run_start_epoch)
        if self.workers is not None:
            self.workers.restart()
            self._announce()  # now, so it reaches each worker before the master's spawn message
        if self.role in ("local", "master"):
            self._watch_sweep()
            self.live.reset()
            if self._clock_greenlet is not None:
                self._clock_greenlet.kill(block=False)
            self._clock_greenlet = gevent.spawn(self._clock)
            if self.scenario.scrape and self.out_dir is not None:
                if self.scraper is None:
                    self.scraper = Scraper(self.scenario.scrape, self.out_dir, verify=not self.insecure)
                self.scraper.start()
            if first:
                gevent.spawn(self._progress)
                if self.role == "master":
                    gevent.spawn(self._announce_workers)

    def _watch_sweep(self) -> None:
        """Local or master: with `analysis.early_stop`, judge each open-loop stage once it is over."""
        sc = self.scenario
        rule = rule_of((sc.analysis or {}).get("early_stop"))
        if not rule or not sc.open_loop or not sc.stages or any(st.rate is None for st in sc.stages):
            self.sweep = None
            return
        from .arrivals import Arrivals

        schedule = list(Arrivals(sc, sc.seed, duration_s=self._duration()).times())
        self.sweep = SweepWatch(sc, rule, float((sc.analysis or {}).get("settle_s", 2.0)), schedule)
        start = self.run_start_epoch or time.time()

        def stop(stage: int, reason: str) -> None:
            self.early_stop = {"stage": stage, "reason": reason}
            self.request_stop(f"the sweep stopped early after stage {stage}: {reason}")

        durations = [st.duration_s for st in sc.stages]
        grace = min(5.0, 0.9 * min(durations[1:] or durations))
        gevent.spawn(self.sweep.run, start, grace, stop, gevent.sleep)

    def _flusher(self) -> None:
        assert self.sink is not None
        while True:
            gevent.sleep(FLUSH_INTERVAL_S)
            try:
                if self.role == "worker":
                    self.sink.flush(always=True)  # an empty batch still carries the worker's state
                else:
                    self.sink.flush()
            except Exception as exc:  # noqa: BLE001 - never let the flusher die silently
                print(f"ttbench: warning: record flush failed: {exc}", file=sys.stderr, flush=True)

    def _announce_workers(self) -> None:
        assert self.workers is not None
        while True:
            if not self.stopping:
                for entry in self.workers.check_lost():
                    print(f"ttbench: warning: worker {entry['worker_index']} ({entry['client_id']}) was lost; the run "
                          f"goes on; up to {entry['possibly_missing_records']} of its records may be missing",
                          file=sys.stderr, flush=True)
            self._announce()
            gevent.sleep(1.0)

    def _announce(self) -> None:
        """Master: the workers' dense ranks, re-announced when they change (never while the run winds down)."""
        if self.workers is not None and self.run_start_epoch is not None and not self.stopping:
            self.workers.announce(MSG_WORKERS, self.run_start_epoch, self._duration(), self.run_id)

    def on_split_ask(self, node_id: str) -> None:
        """Master: a worker that has just started listening asks for the rank it may have missed."""
        if self.workers is not None:
            self.workers.resend(node_id)

    def on_split(self, data: dict[str, Any]) -> None:
        """Worker: the master's rank announcement (and the run's id: idempotency keys must carry the master's)."""
        if data.get("run_id"):
            self.run_id = self.caller.run_id = str(data["run_id"])
        start = float(data["start"])
        if self.run_start_epoch != start:  # a new run (the web UI starts several): a fresh timeline
            self.split.entries = [(0.0, -1, 1)]
        self.run_start_epoch = start
        self.announced_duration = float(data["duration"])
        self.split.set(int(data["rank"]), int(data["workers"]), float(data["from_t"]))
        if self.arrivals is not None and self.arrivals.started_at is None:
            self.arrivals.duration_s = float(data["duration"])
            self.arrivals.start(start)

    def _duration(self) -> float:
        opt = self.environment.parsed_options.ttbench_duration
        return float(opt) if opt else self.scenario.total_duration_s

    def _clock(self) -> None:
        """Run the user stages, then drain: ramp to zero users, wait for the last records, quit."""
        runner = self.environment.runner
        sc = self.scenario
        if sc.stages and any(s.users is not None for s in sc.stages):
            for st in sc.stages:
                if st.users is not None:
                    runner.start(st.users, sc.spawn_rate)
                gevent.sleep(st.duration_s)
        else:
            gevent.sleep(self._duration())
        self.stopping = True
        if self.arrivals is not None:
            self.arrivals.stop()
        runner.start(0, max(50, runner.user_count))  # in-flight calls finish (up to --stop-timeout), no new ones start
        deadline = time.time() + sc.stop_timeout_s + 5
        while runner.user_count > 0 and time.time() < deadline:
            gevent.sleep(0.2)
        if self.role == "master":
            gevent.sleep(WORKER_REPORT_INTERVAL + 1)
            self._wait_for_shipments()
        if self.interactive:
            runner.stop()  # the web UI stays up; the report is written on test_stop
        else:
            runner.quit()

    def _wait_for_shipments(self) -> None:
        """Master: wait while workers still hold records the master has not taken, as long as they keep coming."""
        assert self.workers is not None
        said = False
        last, seen = time.time(), self.sink.written if self.sink else 0
        self.pending_at_stop = self.workers.pending()
        while (pending := self.workers.pending()) > 0:
            if not said:
                print(f"ttbench: the workers still hold {pending} records the master has not taken; waiting for them",
                      file=sys.stderr, flush=True)
                said = True
            gevent.sleep(0.2)
            now_seen = self.sink.written if self.sink else 0
            if now_seen != seen:
                last, seen = time.time(), now_seen
            elif time.time() - last > SHIPMENT_STALL_S:
                print(f"ttbench: warning: no records arrived for {SHIPMENT_STALL_S:.0f} s; the workers still hold "
                      f"{pending}: each writes them to a file it names when it quits", file=sys.stderr, flush=True)
                return

    def _progress(self) -> None:
        opt = self.environment.parsed_options.ttbench_progress
        tty = sys.stderr.isatty()
        every = float(opt) if opt else (2.0 if tty else 10.0)
        total = self._duration()
        start = time.time()
        while True:
            gevent.sleep(every)
            s = self.live.snapshot()
            users = self.environment.runner.user_count
            clients = getattr(self.environment.runner, "clients", None)
            if clients and self.workers is not None:
                cpus = [c.cpu_usage for c in clients.values() if getattr(c, "cpu_usage", None) is not None]
                if cpus:
                    self.workers.locust_peak_cpu = max(self.workers.locust_peak_cpu or 0.0, max(cpus))

            def ms(v: float | None) -> str:
                return "-" if v is None else f"{v:.0f}ms"

            line = (f"[ttbench] {time.time() - start:5.1f}/{total:.0f}s users {users} calls {s['calls']} "
                    f"req/s {s['rps']:.1f} TTFT p50 {ms(s['ttft_p50'])} p95 {ms(s['ttft_p95'])} "
                    f"errors {s['failed']} retries {s['retries']}")
            if self.arrivals is not None:
                line += f" dropped {self.arrivals.dropped}"
            print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)

    def finish(self) -> None:
        """quitting: let killed calls record themselves, last flush, final stats CSV, a summary file."""
        deadline = time.time() + 2.0
        while self.caller.in_flight > 0 and time.time() < deadline:
            gevent.sleep(0.02)
        if self.sink is not None:
            self.sink.close()
        if self.scraper is not None:  # the last read of every target, after the run's end
            self.scraper.stop()
        if self.telemetry is not None:  # every record is in: a last scrape (--metrics-linger) sees the end
            self.telemetry.close(gevent.sleep)
        if self.role == "worker" or self.out_dir is None:
            return
        opts = self.environment.parsed_options
        if getattr(opts, "csv_prefix", None):
            from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

            stop_csv_writer()

            with open(f"{opts.csv_prefix}_stats.csv", "w", newline="") as f:
                StatsCSV(self.environment, PERCENTILES_TO_REPORT).requests_csv(csv.writer(f))
        usage = resource.getrusage(resource.RUSAGE_SELF)
        runner = self.environment.runner
        harness = {
            "cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": time.time() - self.live.started,
            "cpu_warning": bool(getattr(runner, "cpu_warning_emitted", False)
                                or getattr(runner, "worker_cpu_warning_emitted", False)),
            "peak_worker_cpu_percent": self.workers.peak_cpu() if self.workers else None,
            "workers": self.workers.summary() if self.workers else [],
            "resplits": self.workers.resplits if self.workers else [],
            "lost_workers": self.workers.lost if self.workers else [],
            "shipping": {**self.workers.held(), "left_on_workers": self.workers.pending(),
                         "pending_at_stop": self.pending_at_stop,
                         "queue_s": QUEUE_S, "master_us_per_record": None if self.s_per_record is None
                         else round(self.s_per_record * 1e6, 1)} if self.workers else None,
            "run_id": self.run_id, "role": self.role, "records": self.sink.written if self.sink else 0,
            "stop_reason": self.stop_reason, "live": self.live.snapshot(),
            "arrivals": self._arrivals_summary(),
            "retry_budget": self._budget_summary(),
            "spend": {"money": str(self.spend.money), "tokens": self.spend.tokens, "images": self.spend.images,
                      "cap": None if self.max_spend is None else str(self.max_spend),
                      "max_tokens": self.scenario.spend_max_tokens, "max_images": self.scenario.spend_max_images,
                      "held_by": self.role, "in_flight_at_cap": self.spend_in_flight_at_cap,
                      "overshoot_bound": "at most one call per user: the calls in flight when the cap (on a worker, its "
                                         "lease of it) was reached"},
            "gateway": self.profile.name, "dry_runs_ignored": self.dry_runs_ignored,
            "early_stop": self.early_stop, "run_start": self.run_start_epoch,
            "exit_code": self.exit_code,
        }
        (self.out_dir / "harness.json").write_text(json.dumps(harness, indent=2, default=str))
        shipping = harness["shipping"]
        if shipping and (shipping["spilled"] or shipping["held_peak"] > 10_000
                         or shipping["left_on_workers"]):
            print(f"ttbench: warning: the master fell behind its workers: one held up to {shipping['held_peak']} "
                  f"records for it ({shipping['spilled']} through spill files, {shipping['left_on_workers']} never "
                  "taken); live figures lagged by as much (harness.json: shipping)", file=sys.stderr, flush=True)
        self.environment.process_exit_code = self.exit_code

    def _budget_summary(self) -> dict[str, Any]:
        if self.pool is not None:  # the master: retries spent are the retried attempts the workers shipped
            return {"total": self.pool.total, "granted": self.pool.granted_total, "spent": self.retries_seen,
                    "held_by": "master"}
        return {"total": self.scenario.retry.budget, "spent": self.budget.spent, "denied": self.budget.denied,
                "held_by": self.role}


def install() -> None:
    """Register ttbench with Locust's events (called once by the locustfile)."""

    @events.init_command_line_parser.add_listener
    def _args(parser: Any, **_kw: Any) -> None:
        add_arguments(parser)

    @events.init.add_listener
    def _init(environment: Any, **_kw: Any) -> None:
        opts = environment.parsed_options
        if opts is None:
            return
        if not opts.scenario:
            fail("no scenario: pass --scenario FILE (or set TTBENCH_SCENARIO)")
        try:
            scenario = load_scenario(opts.scenario)
        except ScenarioError as exc:
            fail(str(exc))
        rt = Runtime(environment, scenario)
        Runtime._instance = rt
        if not opts.stop_timeout:
            environment.stop_timeout = scenario.stop_timeout_s
            opts.stop_timeout = scenario.stop_timeout_s
        weights = rt.workload.family_weights()
        for cls in environment.user_classes:
            fam = getattr(cls, "family", None)
            if fam in weights:
                cls.weight = weights[fam]
        environment.user_classes = [c for c in environment.user_classes if getattr(c, "weight", 1) > 0]
        environment.available_user_classes = {c.__name__: c for c in environment.user_classes}
        from .webui import install as install_web_ui

        install_web_ui(environment, rt)
        if rt.role == "local" and not (environment.host or rt.target):  # a worker gets the host from its master
            fail(f"{scenario.path}: target: 'sim' needs `ttbench run` (which starts the simulator) or --host URL")
        runner = environment.runner
        if rt.role == "master":
            runner.register_message(MSG_RECORDS, lambda environment, msg, **k: rt.on_shipped(msg.data, msg.node_id))
            runner.register_message(MSG_BUDGET_ASK, lambda environment, msg, **k: rt.on_budget_ask(msg.node_id))
            runner.register_message(MSG_SPEND_ASK, lambda environment, msg, **k: rt.on_spend_ask(msg.node_id))
            runner.register_message(MSG_SPLIT_ASK, lambda environment, msg, **k: rt.on_split_ask(msg.node_id))

            def _stop_msg(environment: Any, msg: Any, **_k: Any) -> None:
                data = msg.data if isinstance(msg.data, dict) else {"reason": str(msg.data), "code": 0}
                if not rt.stopping:
                    rt.request_stop(str(data["reason"]), int(data.get("code") or 0))

            runner.register_message(MSG_STOP, _stop_msg)
        elif rt.role == "worker":
            runner.register_message(MSG_WORKERS, lambda environment, msg, **k: rt.on_split(msg.data))
            budget = rt.budget
            assert isinstance(budget, LeasedBudget)
            runner.register_message(MSG_BUDGET_GRANT, lambda environment, msg, **k: budget.granted(int(msg.data)))
            runner.register_message(MSG_SPEND_GRANT, lambda environment, msg, **k: rt.on_spend_grant(float(msg.data)))
            shipper = rt.sink
            assert isinstance(shipper, Shipper)
            runner.register_message(MSG_RECORDS_ACK, lambda environment, msg, **k: shipper.on_ack(*msg.data))
            # a rank announced while this process was still starting (before it listened) was dropped: ask again
            runner.send_message(MSG_SPLIT_ASK, 1)
            from locust.runners import STATE_RUNNING, STATE_SPAWNING

            if getattr(runner, "worker_state", None) in (STATE_SPAWNING, STATE_RUNNING):
                rt.start()  # the master's spawn came first: Locust fired test_start before this runtime existed

    @events.test_start.add_listener
    def _start(environment: Any, **_kw: Any) -> None:
        if Runtime._instance is not None:
            Runtime._instance.start()

    @events.test_stop.add_listener
    def _stop(environment: Any, **_kw: Any) -> None:
        rt = Runtime._instance
        if rt is not None and rt.interactive:
            rt.stopping = True
            if rt.arrivals is not None:
                rt.arrivals.stop()
            if rt.scraper is not None:
                rt.scraper.stop()
            gevent.spawn_later(WORKER_REPORT_INTERVAL + 1 if rt.role == "master" else 1.0, rt.write_report)

    @events.quitting.add_listener
    def _quit(environment: Any, **_kw: Any) -> None:
        if Runtime._instance is not None:
            Runtime._instance.finish()


__all__ = ["LocalRunner", "Runtime", "install", "stop_csv_writer"]
