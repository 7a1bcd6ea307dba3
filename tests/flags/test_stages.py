"""flags.stages: the pipeline notes say the model chunks the layout string places."""

from __future__ import annotations

from sp_planner.catalog import load_model
from sp_planner.flags import render_flags
from sp_planner.flags.stages import group_flags, layout_string, micro_batch_group_of, pipeline_notes
from tests.flags.conftest import request


def test_the_layout_note_gives_each_stages_chunks_as_the_layout_places_them():
    # Llama-3-8B's 32 layers over pp 4 x vpp 3, 8 first and 6 last: the two middle stages hold
    # (32 - 8 - 6) / 2 = 9, three chunks of 3; the first 8 = 2 + 3 + 3, its rest in chunk 0; the last
    # 6 divides by 3, so an even 2, 2, 2 (Megatron's even share), not 3, 3 and an empty chunk, which
    # the note said ("every chunk as many layers as a middle stage's").
    flags = request(load_model("llama3-8b"), 131072, 32, ring=4, pp=4, vpp=3, first_stage_layers=8,
                    last_stage_layers=6)
    # Virtual stages c x pp + p: chunk 0 of stages 0-3, then chunk 1, then chunk 2.
    assert layout_string(flags) == "Ett|(t*3|)*2tt|(t*3|)*3tt|(t*3|)*3ttL"
    note = next(n for n in pipeline_notes(flags) if n.startswith("--pipeline-model-parallel-layout"))
    assert ("places the 8/6 first/last stage layers in model chunks of (first 2, 3, 3; middle 3, 3, 3; last 2, 2, "
            "2; chunk 0 first)") in note
    assert "every chunk as many layers as a middle stage's" not in note


def test_megatron_sets_the_micro_batch_group_where_it_is_not_pp():
    # Llama-3-8B over pp 4 x vpp 2, dp 2 (tp 1 on 8 GPUs): 36 sequences are m 18, which Megatron's
    # default group of pp 4 refuses (a last group of 2) and sp-plan runs in groups of 6
    # (pipeline_order.micro_batch_group); 32 are m 16, groups of pp: no flag. The other frameworks refuse
    # the first (flags.base._group_failures).
    model = load_model("llama3-8b")
    odd = request(model, 8192, 36, pp=4, vpp=2, dp=2)
    assert micro_batch_group_of(odd) == 6
    assert group_flags(odd) == ["--microbatch-group-size-per-virtual-pipeline-stage 6"]
    assert "--microbatch-group-size-per-virtual-pipeline-stage 6" in render_flags("megatron", odd).text
    assert any("in groups of 6, not Megatron's default pp 4" in n for n in pipeline_notes(odd))
    even = request(model, 8192, 32, pp=4, vpp=2, dp=2)
    assert group_flags(even) == [] and "microbatch-group" not in render_flags("megatron", even).text
    for framework in ("mindspeed", "torchtitan"):
        refused = render_flags(framework, odd)
        assert not refused.supported and "micro-batch groups of 6" in refused.reason


def test_the_group_refusal_advises_megatron_only_on_gpus():
    # The same 18 micro-batches over pp 4: on GPUs Megatron-LM's flags express it, so the refusal
    # names it; on Ascend NPUs Megatron-LM runs only through MindSpeed (FlagChoices.on_npu), so the
    # refusal offers the global batch alone (a user ran --framework mindspeed on ascend-910b).
    odd = request(load_model("llama3-8b"), 8192, 36, pp=4, vpp=2, dp=2)
    gpu = render_flags("mindspeed", odd).reason
    assert gpu.endswith("use --framework megatron or a global batch whose micro-batches are a multiple of pp")
    npu = render_flags("mindspeed", odd.model_copy(update={"on_npu": True})).reason
    assert npu.endswith("Megatron-LM only); use a global batch whose micro-batches are a multiple of pp")
    assert "--framework" not in npu
