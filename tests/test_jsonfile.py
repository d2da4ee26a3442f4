"""summary.json's layout: outer levels indented, each deeper value (a finding, a percentile table) on one line."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from analysis.jsonfile import dumps

pytestmark = pytest.mark.timeout(10)


def test_outer_levels_indented_deeper_values_on_one_line():
    summary = {"version": 3, "empty": False, "warnings": [],
               "metrics": {"overall": {"ttft_ms": {"p50": 1.5, "p99": None}}, "cdf": [1, 2, 3]},
               "billing": {"findings": [{"kind": "double_charge", "request_id": "req_1", "amount": Decimal("0.5")},
                                        {"kind": "missing_charge", "request_id": "req_2", "extra": [1, {"a": 2}]}]},
               3: "int key"}
    assert dumps(summary) == """{
  "version": 3,
  "empty": false,
  "warnings": [],
  "metrics": {
    "overall": {
      "ttft_ms": {"p50": 1.5, "p99": null}
    },
    "cdf": [1, 2, 3]
  },
  "billing": {
    "findings": [
      {"kind": "double_charge", "request_id": "req_1", "amount": "0.5"},
      {"kind": "missing_charge", "request_id": "req_2", "extra": [1, {"a": 2}]}
    ]
  },
  "3": "int key"
}
"""


def test_the_text_reads_back_as_json_with_the_same_values():
    obj = {"a": [[1, 2], [3, {"b": 'ü\\n"x"'}]], "c": {"d": {"e": {"f": {"g": [1.25, True, None]}}}}, "h": {}}
    assert json.loads(dumps(obj)) == obj
    assert json.loads(dumps(obj, depth=0)) == obj
    assert dumps(obj, depth=0).count("\n") == 1
