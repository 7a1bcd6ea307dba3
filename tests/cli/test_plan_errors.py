"""Bad input to sp-plan: exit 2, exactly one line on stderr, no traceback, no --out file left behind."""

from __future__ import annotations

import json

import pytest

BASE = {"--model": "llama3-8b", "--hardware": "a800", "--nodes": "2", "--seq-len": "128k"}


def _args(**changes: str | None) -> list[str]:
    options = dict(BASE)
    for key, value in changes.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            options.pop(flag, None)
        else:
            options[flag] = value
    return [item for pair in options.items() for item in pair]


def _assert_one_line_error(sp_plan, tmp_path, args: list[str], *expected: str) -> str:
    out = tmp_path / "plan.json"
    before = set(tmp_path.iterdir())
    result = sp_plan(*args, "--out", out)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    for text in expected:
        assert text in result.stderr, result.stderr
    assert set(tmp_path.iterdir()) == before  # no plan.json, no temporary file
    return result.stderr


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        # The closest names and where every name is listed, not all 33 (a 703-character line).
        ({"model": "llama3-405b"}, ("unknown model 'llama3-405b'. Did you mean Llama-3.1-405B (or",
                                    "README.md's \"Models:\" lists all 33")),
        ({"hardware": "a900"}, ("unknown hardware 'a900'. Did you mean A800?", "README.md's \"Hardware:\" lists all")),
        ({"seq_len": "-5"}, ("--seq-len must be positive, got -5",)),
        ({"seq_len": "lots"}, ("--seq-len 'lots'", "128k")),
        ({"seq_len": "0"}, ("--seq-len must be positive",)),
        ({"nodes": "0"}, ("--nodes",)),
        ({"global_batch": "0"}, ("--global-batch",)),
        ({"zero": "4"}, ("--zero",)),
        ({"recompute": "some"}, ("--recompute", "some")),
        ({"format": "xml"}, ("--format",)),
        ({"seq_len": None}, ("Missing option '--seq-len'",)),
        # 16 GPUs: a pinned degree must divide 16.
        ({"tp": "3"}, ("tp 3", "do not divide the GPU count 16")),
        ({"ulysses": "2", "ring": "3"}, ("ulysses 2 x ring 3 = 6", "16")),
        ({"tp": "2", "pp": "1", "dp": "2", "ulysses": "2", "ring": "1"}, ("= 8", "fewer GPUs than the 16", "--dp 4")),
        # Batch rule: GBS % (MBS*DP) == 0.
        ({"dp": "8", "global_batch": "4"}, ("batch rule", "global_batch 4", "dp*micro_batch = 8*1")),
        # seq_len rule: zigzag ring 2 splits 1001 tokens into 4 chunks.
        ({"seq_len": "1001", "ring": "2"}, ("seq_len rule", "seq_len 1001 is not divisible by 4",
                                             "use --seq-len 1000 or 1004, or pin smaller degrees")),
        # Shorter than the split: only the length above it.
        ({"seq_len": "3", "ring": "2", "ulysses": "2"}, ("not divisible by 8", "use --seq-len 8, or pin")),
        # layers rule: Llama-3-8B has 32 layers, too few for 33 stages even split unevenly (pp 3
        # runs 11/10/11 with uneven first and last stages).
        ({"nodes": "33", "gpus_per_node": "1", "pp": "33"},
         ("layers rule", "num_layers 32 is not divisible by pp 33")),
        # A800 has only the FA2 curve (no published cuDNN fused-attention curve for it).
        ({"attention_kernel": "cudnn"}, ("--attention-kernel", "no published cudnn attention curve", "fa2, sdpa")),
        ({"attention_kernel": "fa9"}, ("--attention-kernel",)),
        # Numbers far out of range: refused with the range, never an OverflowError.
        ({"global_batch": "99999999999999999999"}, ("--global-batch", "less than or equal to 1073741824")),
        ({"nodes": "99999999999999999999"}, ("--nodes", "less than or equal to 1048576")),
        ({"tp": "99999999999999999999"}, ("--tp", "less than or equal to 1048576")),
        ({"seq_len": "99999999999M"}, ("--seq-len 99999999999M is above the largest supported length, "
                                       "1,073,741,824 tokens",)),
        ({"hardware": "A100"}, ("hardware 'A100' is ambiguous: say which, A100-40GB or A100-80GB",)),
    ],
)
def test_bad_option_exits_2_with_one_line(sp_plan, tmp_path, changes, expected):
    _assert_one_line_error(sp_plan, tmp_path, _args(**changes), *expected)


def test_pinned_plan_breaking_the_heads_rule(sp_plan, tmp_path):
    # Qwen2.5-14B has 40 query heads: tp 16 does not divide them.
    stderr = _assert_one_line_error(sp_plan, tmp_path, _args(model="qwen2.5-14b", tp="16"), "heads rule")
    assert "num_heads 40 is not divisible by tp*ulysses = 16*1" in stderr


def test_pinned_ulysses_and_tp_breaking_the_kv_heads_rule(sp_plan, tmp_path):
    # Qwen2.5-14B: 40 heads, 8 KV heads; tp*ulysses = 2*5 = 10 divides 40 but neither 8 | 10 nor 10 | 8.
    stderr = _assert_one_line_error(
        sp_plan, tmp_path, _args(model="qwen2.5-14b", nodes="1", gpus_per_node="10", tp="2", ulysses="5"),
        "kv_heads rule",
    )
    assert "num_kv_heads 8 and tp*ulysses 10" in stderr


def test_malformed_yaml_profile(sp_plan, tmp_path):
    profile = tmp_path / "cluster.yaml"
    profile.write_text("name: broken\npeak_bf16_flops: [1, 2\n")
    _assert_one_line_error(sp_plan, tmp_path, _args(hardware=str(profile)), str(profile), "malformed")


def test_profile_with_a_bad_field(sp_plan, tmp_path):
    profile = tmp_path / "cluster.yaml"
    profile.write_text("name: broken\nhbm_bytes: -1\n")
    _assert_one_line_error(sp_plan, tmp_path, _args(hardware=str(profile)), str(profile))


@pytest.mark.parametrize("field, value, expected", [
    ("hbm_bytes", ".inf", "hbm_bytes: Input should be a finite number"),
    ("hbm_bytes", ".nan", "hbm_bytes: Input should be a finite number"),
    ("hbm_bytes", "1e30", "hbm_bytes: 1e+30 is out of range: it must be at most 1.15e+18"),
    ("peak_bf16_flops", "1e40", "peak_bf16_flops: 1e+40 is out of range: it must be at most 1e+24"),
])
def test_profile_number_out_of_range_names_the_range(sp_plan, tmp_path, field, value, expected):
    import yaml

    from sp_planner.catalog import load_hardware
    from sp_planner.catalog.hardware import profile_to_yaml

    data = yaml.safe_load(profile_to_yaml(load_hardware("a800")))
    profile = tmp_path / "cluster.yaml"
    profile.write_text(yaml.safe_dump(data).replace(f"{field}: {data[field]}", f"{field}: {value}"))
    _assert_one_line_error(sp_plan, tmp_path, _args(hardware=str(profile)), str(profile), expected)


@pytest.mark.parametrize("tier, kind, kinds", [
    ("intra_node", "nvswitch", "'nvlink', 'pcie', 'xgmi' or 'hccs'"),
    ("intra_node", "infiniband", "'nvlink', 'pcie', 'xgmi' or 'hccs'"),  # the other tier's
    ("inter_node", "ib", "'infiniband', 'roce' or 'ethernet'"),
])
def test_profile_link_kind_names_the_tiers_kinds_in_one_line(sp_plan, tmp_path, tier, kind, kinds):
    # The kind was either tier's: pydantic said it in two parts, one per tier's kinds.
    import yaml

    from sp_planner.catalog import load_hardware

    data = load_hardware("a800").model_dump(mode="json")
    data[tier]["kind"] = kind
    profile = tmp_path / "cluster.yaml"
    profile.write_text(yaml.safe_dump(data))
    stderr = _assert_one_line_error(sp_plan, tmp_path, _args(hardware=str(profile)))
    assert stderr == f"error: hardware profile file {profile} is invalid: {tier}.kind: Input should be {kinds}\n"


@pytest.mark.parametrize("field, value, expected", [
    ("hidden_size", 10**15, "hidden_size: 1e+15 is out of range: it must be at most 1,048,576"),
    ("num_hidden_layers", 10**9, "num_layers: 1,000,000,000 is out of range: it must be at most 16,384"),
    ("vocab_size", 10**12, "vocab_size: 1e+12 is out of range: it must be at most 16,777,216"),
    ("attention_dropout", 1.5, "field 'attention_dropout' must be a dropout probability in [0, 1), got 1.5"),
])
def test_config_json_number_out_of_range_names_the_range(sp_plan, tmp_path, field, value, expected):
    config = tmp_path / "config.json"
    llama = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256}
    config.write_text(json.dumps({**llama, field: value}))
    stderr = _assert_one_line_error(sp_plan, tmp_path, _args(model=str(config)), str(config), expected)
    assert "Warning" not in stderr


def test_malformed_config_json(sp_plan, tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"model_type": "llama", "hidden_size": 4096,')
    _assert_one_line_error(sp_plan, tmp_path, _args(model=str(config)), str(config), "malformed")


def test_config_json_missing_a_field(sp_plan, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "llama", "hidden_size": 4096}))
    _assert_one_line_error(sp_plan, tmp_path, _args(model=str(config)), str(config))


@pytest.mark.parametrize("option", ["model", "hardware"])
def test_a_device_that_never_ends_is_refused_not_read_forever(sp_plan, tmp_path, option):
    # /dev/zero given as the config.json or profile was read until memory ran out (fuzzing, stop 57)
    stderr = _assert_one_line_error(sp_plan, tmp_path, _args(**{option: "/dev/zero"}))
    what = {"model": "model config", "hardware": "hardware profile"}[option]
    assert stderr == (f"error: {what} file /dev/zero holds more than 256 MiB (or is a device that never ends, such "
                      "as /dev/zero); give the path of the file itself\n")


def test_missing_hardware_file(sp_plan, tmp_path):
    _assert_one_line_error(sp_plan, tmp_path, _args(hardware=str(tmp_path / "nope.yaml")), "nope.yaml")


def test_out_that_is_a_folder(sp_plan, tmp_path):
    folder = tmp_path / "plans"
    folder.mkdir()
    result = sp_plan(*_args(), "--out", folder)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "is a folder" in result.stderr


def test_report_into_a_folder_of_other_files(sp_plan, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = sp_plan(*_args(), "--report", tmp_path)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "notes.txt" in result.stderr


def test_fa2_above_head_dim_192_on_a_gpu_transformer_engine_refuses(sp_plan, tmp_path):
    # Gemma-2-9B's head dim 256 on an L40S (sm89): TE's FA2 runs above 192 on sm80/90/100/120 only and
    # Megatron's --attention-backend flash leaves no other backend (flags.flash_head_dim).
    args = ["--model", "gemma-2-9b", "--hardware", "l40s", "--nodes", "1", "--seq-len", "8k"]
    _assert_one_line_error(sp_plan, tmp_path, [*args, "--attention-kernel", "fa2"],
                           "Transformer Engine disables flash-attn 2 for Gemma-2-9B's head dim 256 on L40S (sm89)")
    # Without the flag TE picks another backend, its unfused attention: the question is answered,
    # timed with it, with one note that says so (the plans were timed with FA2 silently, then said so).
    answered = sp_plan(*args, "--top", "1", "--format", "json")
    assert answered.exit_code == 0
    assert " ".join(answered.stderr.split()).count("so it runs its unfused attention, which times the "
                                                   "plans") == 1, answered.stderr
    # ... which takes no context parallelism: a pinned Ulysses degree has no backend at all.
    _assert_one_line_error(sp_plan, tmp_path, [*args, "--ulysses", "2"],
                           "--ulysses 2: Transformer Engine disables flash-attn 2", "has no backend and raises")
