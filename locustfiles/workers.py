"""A distributed run's workers, as the master sees them: their shipments and state, dense ranks for the open-loop
schedule, the ones lost and what may be missing from them; and the CPU a worker reports of itself."""

from __future__ import annotations

import resource
import time
from collections import deque
from typing import Any

#: A re-split of the open-loop arrivals takes effect this far past the master's announcement (schedule time).
RESPLIT_DELAY_S = 1.5


class CpuMeter:
    """This process's CPU, as a share of a core over readings at least `every_s` apart."""

    def __init__(self, every_s: float = 2.0) -> None:
        self.every_s = every_s
        self._mark = (time.time(), self._cpu_s())

    @staticmethod
    def _cpu_s() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def percent(self) -> float | None:
        """CPU (% of a core) since the last reading at least `every_s` ago; None in between."""
        wall, cpu = time.time(), self._cpu_s()
        wall0, cpu0 = self._mark
        if wall - wall0 < self.every_s:
            return None
        self._mark = (wall, cpu)
        return round(100.0 * (cpu - cpu0) / (wall - wall0), 1)


class Workers:
    """The master's record of its workers."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.seen: dict[str, dict[str, Any]] = {}
        self.cpu: dict[str, list[float]] = {}
        self.arrivals: dict[str, tuple[int, int]] = {}
        self.lost: list[dict[str, Any]] = []
        self.resplits: list[dict[str, Any]] = []
        self._announced: tuple[str, ...] | None = None
        self._last_sent: dict[str, dict[str, Any]] = {}
        self._message = ""
        self.locust_peak_cpu: float | None = None

    def _index(self, node_id: str) -> int | None:
        getter = getattr(self.runner, "get_worker_index", None)
        try:
            return int(getter(node_id)) if getter is not None else None
        except Exception:  # noqa: BLE001 - a node without an index yet
            return None

    def info(self, node_id: str) -> dict[str, Any]:
        """What is known of one worker (created on first sight)."""
        info = self.seen.get(node_id)
        if info is None:
            info = self.seen[node_id] = {"client_id": node_id, "worker_index": self._index(node_id), "records": 0,
                                         "last_record_end": None, "recent": deque(maxlen=40),
                                         "last_state_at": None, "in_flight": 0, "pending": 0, "held_peak": 0,
                                         "spilled": 0}
        return info

    def shipment(self, node_id: str, data: Any, batch: list[dict[str, Any]]) -> None:
        """A worker's shipment: its records and its state (calls in flight, CPU, arrivals)."""
        info = self.info(node_id)
        now = time.time()
        info["last_state_at"] = now
        if isinstance(data, dict):
            info["in_flight"] = int(data.get("in_flight") or 0)
            if data.get("worker") is not None:
                info["worker_index"] = int(data["worker"])
            if data.get("cpu") is not None:
                self.cpu.setdefault(node_id, []).append(float(data["cpu"]))
            if data.get("arrivals") is not None:
                self.arrivals[node_id] = (int(data["arrivals"][0]), int(data["arrivals"][1]))
            shipping = data.get("shipping")
            if isinstance(shipping, dict):
                info["pending"] = int(shipping.get("pending") or 0)
                info["held_peak"] = max(info["held_peak"], int(shipping.get("held_peak") or 0))
                info["spilled"] = int(shipping.get("spilled") or 0)
        info["recent"].append((now, len(batch)))
        if batch:
            info["records"] += len(batch)
            info["worker_index"] = batch[-1]["worker"]
            info["last_record_end"] = max(info["last_record_end"] or 0.0,
                                          max(r["t_start"] + r["end_ms"] / 1000.0 for r in batch))

    def pending(self) -> int:
        """Records the workers still held, as of their last shipments (lost workers left out)."""
        lost = {w["client_id"] for w in self.lost}
        return sum(int(i["pending"]) for n, i in self.seen.items() if n not in lost)

    def held(self) -> dict[str, int]:
        """The most records any worker held at once for the master, and how many went through spill files."""
        return {"held_peak": max((int(i["held_peak"]) for i in self.seen.values()), default=0),
                "spilled": sum(int(i["spilled"]) for i in self.seen.values())}

    def in_flight(self) -> int:
        """Calls in flight over all workers, as of their last shipments."""
        return sum(int(i["in_flight"]) for i in self.seen.values())

    def check_lost(self) -> list[dict[str, Any]]:
        """Workers that stopped sending heartbeats since the last check, each with an upper bound of the records
        that may be missing: the attempts in flight at its last shipment (every 0.5 s), plus what it may have
        finished before it died, bounded by twice its biggest shipment of the last 10 s, plus the records it still
        held for the master then."""
        from locust.runners import STATE_MISSING

        lost_ids = {w["client_id"] for w in self.lost}
        new = []
        for node_id, info in self.seen.items():
            client = self.runner.clients.get(node_id)
            if node_id in lost_ids or not (client is None or client.state == STATE_MISSING):
                continue
            last = info["last_state_at"]
            peak = max((n for t, n in info["recent"] if last is not None and last - t <= 10.0), default=0)
            in_flight, held = int(info["in_flight"]), int(info["pending"])
            entry = {"client_id": node_id, "worker_index": info["worker_index"], "lost_at": time.time(),
                     "last_shipment_at": last, "records_received": info["records"],
                     "last_record_end": info["last_record_end"], "in_flight_at_last_shipment": in_flight,
                     "held_at_last_shipment": held, "possibly_missing_records": in_flight + held + 2 * peak + 1}
            self.lost.append(entry)
            new.append(entry)
        return new

    def restart(self) -> None:
        """A new run: the next announcement starts a fresh timeline."""
        self._announced = None
        self._last_sent = {}

    def announce(self, message: str, run_start: float, duration: float, run_id: str) -> None:
        """Give the live workers dense ranks 0..n-1 when they changed; a change takes effect RESPLIT_DELAY_S into
        the future on the schedule's own clock, so every worker switches at the same arrival."""
        runner = self.runner
        first = self._announced is None
        # at the start every connected worker gets users; later only those running users take arrivals (a worker
        # that joins takes users only when the master rebalances them: Locust's --enable-rebalancing)
        idle = [*runner.clients.ready] if first else []
        nodes = sorted([*idle, *runner.clients.running, *runner.clients.spawning],
                       key=lambda n: (i if (i := self._index(n.id)) is not None else 1 << 30))
        key = tuple(node.id for node in nodes)
        if not nodes or key == self._announced:
            return
        self._announced = key
        now = time.time()
        from_t = 0.0 if first else max(0.0, now - run_start + RESPLIT_DELAY_S)
        ranks = {}
        self._message = message
        for rank, node in enumerate(nodes):
            ranks[str(self._index(node.id))] = rank
            payload = {"rank": rank, "workers": len(nodes), "from_t": from_t, "start": run_start,
                       "duration": duration, "run_id": run_id}
            self._last_sent[node.id] = payload
            runner.send_message(message, payload, client_id=node.id)
        self.resplits.append({"at": now, "from_t": round(from_t, 3), "workers": len(nodes), "ranks": ranks})

    def resend(self, node_id: str) -> None:
        """Send a worker the rank last announced to it again (it asked: the first may have come before it listened)."""
        payload = self._last_sent.get(node_id)
        if payload is not None and self._announced is not None and node_id in self._announced:
            self.runner.send_message(self._message, payload, client_id=node_id)

    def arrivals_summary(self) -> dict[str, int] | None:
        """Arrivals offered and dropped, summed over the workers."""
        if not self.arrivals:
            return None
        return {"offered": sum(o for o, _ in self.arrivals.values()),
                "dropped": sum(d for _, d in self.arrivals.values())}

    def summary(self) -> list[dict[str, Any]]:
        """Each worker's index, records shipped, CPU (mean and peak of its readings, % of a core) and arrivals."""
        out = []
        for node_id, info in self.seen.items():
            cpu = self.cpu.get(node_id, [])
            arr = self.arrivals.get(node_id)
            out.append({"client_id": node_id, "worker_index": info["worker_index"], "records": info["records"],
                        "records_held_peak": info["held_peak"], "records_spilled": info["spilled"],
                        "cpu_percent_mean": round(sum(cpu) / len(cpu), 1) if cpu else None,
                        "cpu_percent_peak": max(cpu) if cpu else None,
                        "arrivals": {"offered": arr[0], "dropped": arr[1]} if arr else None})
        return sorted(out, key=lambda w: (w["worker_index"] is None, w["worker_index"] or 0))

    def peak_cpu(self) -> float | None:
        """The highest CPU any worker reported (its own readings, or Locust's)."""
        peaks = [max(v) for v in self.cpu.values() if v]
        if self.locust_peak_cpu is not None:
            peaks.append(self.locust_peak_cpu)
        return max(peaks) if peaks else None
