"""The billing audit in a helper process beside the metrics: the same result as audit() on whole frames, the
ledger's one-line errors raised as they are, and the audit done here when no helper can run."""

from __future__ import annotations

import pytest

from analysis import billing_job, columnar, helper, settings
from analysis.billing import Policy, audit
from analysis.billing_job import AuditJob
from analysis.billing_stream import read_ledger_stream
from analysis.load import InputError, LoadReport
from ttformats.prices import load_price_sheet

from .test_billing_stream import norm, planted_run, run_inputs

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def small_runs_use_the_helper(monkeypatch):
    """A helper even for these small runs (below HELPER_MIN_ROWS the audit runs in the report's own process)."""
    monkeypatch.setattr(billing_job, "HELPER_MIN_ROWS", 0)


def test_the_helpers_audit_equals_audit_over_the_whole_frames(tmp_path, monkeypatch, small_runs_use_the_helper):
    run, lost = planted_run(tmp_path / "run", 21, calls=200)
    att, df, stream, sheet, policy = run_inputs(run)
    want = norm(audit(att, df, sheet, policy, lost))
    with columnar.ensure(run, LoadReport()) as col:
        monkeypatch.setattr(billing_job, "HELPER_MIN_ROWS", col.rows + 1)  # a small run: audited here, no helper
        job = AuditJob(run, stream, sheet, policy, lost, col)
        assert job.proc is None and norm(job.result()) == want
        monkeypatch.setattr(billing_job, "HELPER_MIN_ROWS", col.rows)
        job = AuditJob(run, stream, sheet, policy, lost, col)
        assert job.proc is not None
        assert norm(job.result()) == want
        assert job.proc.returncode == 0  # the helper's result, not one computed here after it failed
        monkeypatch.setattr(helper.sys, "executable", "/bin/false")  # a helper that dies at once
        job = AuditJob(run, stream, sheet, policy, lost, col)
        assert norm(job.result()) == want
        assert job.proc is not None and job.proc.returncode == 1


def test_a_bad_ledger_line_found_by_the_helper_is_the_same_one_line_error(tmp_path, small_runs_use_the_helper):
    run, lost = planted_run(tmp_path / "run", 22, calls=60)
    lines = (run / "ledger.csv").read_text().splitlines(keepends=True)
    lines[20] = lines[20].replace(",USD", ",USD,").replace("charge,", "charge,x,", 1)
    (run / "ledger.csv").write_text("".join(lines))
    with pytest.raises(InputError) as whole:
        run_inputs(run)
    cfg = settings.resolve({"file": "ledger.csv"}, None, None, None, None, base=run)
    stream, _ = read_ledger_stream(run, cfg, None, [])
    with columnar.ensure(run, LoadReport()) as col:
        job = AuditJob(run, stream, load_price_sheet(run / "prices.yaml"), Policy(), lost, col)
        with pytest.raises(InputError) as helped:
            job.result()
        assert job.proc is not None and job.proc.returncode == 0
    assert str(helped.value) == str(whole.value) and "ledger.csv" in str(helped.value)
