"""planfile_checks: a plan file's plan refused before any work where it cannot run or be timed."""

import pytest

from sp_planner.catalog import load_hardware, load_model
from sp_planner.errors import UserInputError
from sp_planner.plan import ParallelPlan
from sp_planner.planfile import load_plan_file, write_plan_file
from sp_planner.planfile_checks import check_loaded_plan_times, hardware_problems
from tests.test_planfile import _plan_file


def test_hardware_problems_name_each_option_the_profile_cannot_run():
    # A800: no FP8 peak (in the words PlanFile's read refuses it with, tests/test_planfile.py);
    # H100-SXM runs FP8 GEMMs but has no published FP8 attention curve.
    a800, h100 = load_hardware("a800"), load_hardware("h100-sxm")
    assert hardware_problems(ParallelPlan(), a800) == []
    assert hardware_problems(ParallelPlan(precision="fp8"), a800) == [
        "plan.precision fp8 is not available on A800: its profile gives no FP8 peak and FP8 GEMM efficiency; use bf16"]
    assert hardware_problems(ParallelPlan(precision="fp8"), h100) == []
    assert hardware_problems(ParallelPlan(precision="fp8", fp8_attention=True), h100) == [
        "plan.fp8_attention: no published FP8 attention curve for H100-SXM (modelled on B200, B300, GB200-NVL72, "
        "GB300-NVL72)"]


def test_a_plan_file_of_a_sparse_attention_model_is_refused_where_sparse_mla_is_not_timed(tmp_path):
    from sp_planner.specs.attention import DSASpec

    v32 = load_model("DeepSeek-V3").model_copy(update={
        "name": "DeepSeek-V3.2-Exp", "dsa": DSASpec(index_n_heads=64, index_head_dim=128, index_topk=2048)})
    path = tmp_path / "plan.json"
    plan = ParallelPlan(dp=4, pp=1, tp=2, ulysses=1, ring=2, cp_comm="allgather")  # 61 layers: no even split
    pf = _plan_file(plan).model_copy(update={"model": v32})
    write_plan_file(path, pf)
    check_loaded_plan_times(load_plan_file(path))  # timed on an H800 (cost.dsa)
    write_plan_file(path, pf.model_copy(update={"hardware": load_hardware("a800")}))
    with pytest.raises(UserInputError, match=r"^DeepSeek-V3.2-Exp uses DeepSeek Sparse Attention .* on A800 none is"):
        check_loaded_plan_times(load_plan_file(path))
    write_plan_file(path, _plan_file())
    check_loaded_plan_times(load_plan_file(path))  # a dense model's file is timed
