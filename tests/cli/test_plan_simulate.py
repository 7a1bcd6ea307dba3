"""`sp-plan --simulate K` shows the simulated step time beside the analytic one."""

from __future__ import annotations

import json


def test_sp_plan_simulate_shows_both_times(sp_plan):
    args = ("--model", "llama3-8b", "--hardware", "h100", "--nodes", 2, "--seq-len", "64k", "--global-batch", 16,
            "--top", 5, "--simulate", 3)
    table = sp_plan(*args)
    assert table.exit_code == 0, table.stderr
    assert "sim step" in table.stdout
    doc = json.loads(sp_plan(*args, "--format", "json").stdout)
    simulated = [plan["simulated_step_time_s"] for plan in doc["plans"]]
    assert all(t is not None and t > 0 for t in simulated[:3])
    assert simulated[:3] == sorted(simulated[:3])
    assert simulated[3:] == [None, None]
