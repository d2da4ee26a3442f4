"""Scenario files: the shipped ones load; bad ones fail in one line naming file, key path and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from locustfiles.scenario import ScenarioError, load_scenario, parse_scenario

from .runs import ROOT, ttbench

pytestmark = pytest.mark.timeout(60)

SHIPPED = sorted((ROOT / "scenarios").glob("*.yaml"))


def test_at_least_the_six_named_scenarios_ship():
    names = {p.stem for p in SHIPPED}
    assert {"smoke", "chat-mix", "streaming-heavy", "retries-under-faults", "billing-audit", "capacity-sweep"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_scenarios_load(path):
    sc = load_scenario(path)
    assert sc.mix and sc.total_duration_s > 0


BASE = {"mix": [{"endpoint": "chat"}]}


@pytest.mark.parametrize(
    "data,needle",
    [
        ({"mix": [{"endpoint": "chat"}], "userz": 3}, "userz: unknown key"),
        ({"mix": [{"endpoint": "chat", "weight": 0}]}, "mix: weights sum to zero"),
        ({"mix": [{"endpoint": "telepathy"}]}, "mix[0].endpoint: unknown endpoint 'telepathy'"),
        ({"mix": [{"endpoint": "chat", "stream": 1.5}]}, "mix[0].stream: must be between 0 and 1"),
        ({"mix": [{"endpoint": "chat", "strem": 1}]}, "mix[0].strem: unknown key"),
        ({"mix": [{"endpoint": "chat"}], "duration": "-5s"}, "duration: expected a duration"),
        ({"mix": [{"endpoint": "chat"}], "duration": 0}, "duration: must be positive"),
        ({"mix": [{"endpoint": "chat"}], "users": "many"}, "users: expected a number"),
        ({"mix": [{"endpoint": "chat"}], "users": 2.5}, "users: expected a whole number"),
        ({"mix": []}, "mix: expected a non-empty list"),
        ({"mix": [{"endpoint": "chat", "models": {"a": 0}}]}, "mix[0].models: weights sum to zero"),
        ({"mix": [{"endpoint": "chat"}], "arrivals": {"process": "poisson"}}, "arrivals.rate: an open-loop process"),
        ({"mix": [{"endpoint": "chat"}], "arrivals": {"process": "bursty"}}, "arrivals.process: unknown arrival"),
        ({"mix": [{"endpoint": "chat"}], "target": "ftp://x"}, "target: expected 'sim' or an http(s) URL"),
        ({"mix": [{"endpoint": "chat", "prompt_tokens": {"dist": "zipf"}}]}, "mix[0].prompt_tokens.dist: unknown"),
        ({"mix": [{"endpoint": "chat", "output_tokens": {"min": 10, "max": 5}}]}, "output_tokens.max: must be >= min"),
        ({"mix": [{"endpoint": "chat"}], "retry": {"max_attempts": 0}}, "retry.max_attempts: must be >= 1"),
        ({"mix": [{"endpoint": "chat"}], "api_key_env": "not a name"}, "api_key_env: expected an environment"),
        ({"mix": [{"endpoint": "chat"}], "stages": [{"duration": "5s"}]}, "stages[0]: needs a rate"),
        ({"mix": [{"endpoint": "chat"}], "think_time": {"min_s": 2, "max_s": 1}}, "think_time.max_s: must be >="),
        ({"mix": [{"endpoint": "images", "images": {"n": 11}}]}, "mix[0].images.n: must be between 1 and 10"),
        ([1, 2], "expected a mapping at the top level"),
    ],
)
def test_bad_scenarios_name_the_key(data, needle):
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data, "bad.yaml")
    assert str(err.value).startswith("bad.yaml")
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_ttbench_run_reports_bad_input_in_one_line_exit_2(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mix:\n  - endpoint: chat\n    weight: -1\n")
    res = ttbench("run", str(bad), "--out", str(tmp_path / "o"))
    assert res.returncode == 2
    assert res.stderr.strip() == f"ttbench: error: {bad}: mix[0].weight: must be >= 0, got -1"
    binary = tmp_path / "blob.yaml"
    binary.write_bytes(b"\x00\xff\x00")
    res = ttbench("run", str(binary))
    assert res.returncode == 2 and "binary content" in res.stderr and "Traceback" not in res.stderr
    res = ttbench("run", str(tmp_path / "missing.yaml"))
    assert res.returncode == 2 and "cannot read the scenario" in res.stderr
    res = ttbench("run", "scenarios/smoke.yaml", "-u", "0")
    assert res.returncode == 2 and "-u: must be positive" in res.stderr
    res = ttbench("run", "scenarios/smoke.yaml", "-t", "soon")
    assert res.returncode == 2 and "expected a duration" in res.stderr


def test_a_bare_off_lifts_the_money_cap(tmp_path: Path):
    """`spend: {max: off, max_tokens: N}` as the README writes it: YAML reads a bare off as false."""
    path = tmp_path / "tokens-only.yaml"
    path.write_text("name: tokens-only\ntarget: http://127.0.0.1:9\nspend: {max: off, max_tokens: 5000}\n"
                    "mix:\n  - {endpoint: chat, weight: 1}\n")
    sc = load_scenario(path)
    assert (sc.spend_money_off, sc.spend_max, sc.spend_max_tokens) == (True, None, 5000)
    path.write_text(path.read_text().replace(", max_tokens: 5000", ""))
    with pytest.raises(ScenarioError, match="off needs a token or image cap"):
        load_scenario(path)
