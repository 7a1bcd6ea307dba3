"""cli.plan_output: what the table says about the plans the framework cannot express."""

from __future__ import annotations

from sp_planner.cli import plan_output
from sp_planner.flags import render_flags

QUESTION = ["--model", "llama3-8b", "--hardware", "h100-sxm", "--nodes", "2", "--seq-len", "131000",
            "--framework", "torchtitan", "--framework-version", "0.2.2"]


def test_best_overall_reason_is_asked_of_the_release_the_user_named(sp_plan, monkeypatch):
    """The "best plan overall" line explains the refusal of the release asked for, not the newest."""
    asked = []

    def recording(framework, request, *args, **kwargs):
        asked.append(request)
        return render_flags(framework, request, *args, **kwargs)

    monkeypatch.setattr(plan_output, "render_flags", recording)
    result = sp_plan(*QUESTION)
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "The best plan overall, tp 1 x ulysses 4 x ring 1 x dp 4" in text
    best = [r for r in asked if r.plan.ulysses == 4 and r.plan.dp == 4 and r.plan.ring == 1]
    assert best and all(r.framework_version == "0.2.2" for r in best)
    reason = render_flags("torchtitan", best[0]).reason
    assert reason and " ".join(reason.split()) in text
