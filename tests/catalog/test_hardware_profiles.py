"""Built-in hardware profiles: sourced, plausible, tied to the published figures they come from;
user profiles: every kind of bad file gives one line naming the file and the field."""

from pathlib import Path

import pytest
import yaml

from sp_planner.catalog import (
    builtin_gpu,
    builtin_hardware_names,
    builtin_profile_name,
    load_hardware,
    profile_to_yaml,
    read_hardware_file,
)
from sp_planner.errors import UserInputError
from sp_planner.specs.hardware import SOURCED_FIELDS

REPO_PROFILES = Path(__file__).resolve().parents[2] / "hardware_profiles"
EXPECTED_NAMES = [
    "A100-40GB", "A100-80GB", "A800", "Ascend-910B", "B200", "B300", "GB200-NVL72", "GB300-NVL72", "H100-SXM",
    "H200", "H800", "L20", "L40S", "MI300X",
]  # fmt: skip
GB = 1e9
# Blackwell Ultra doubles the SFU exponent rate: cuDNN attention on GB300 (2017 TFLOPS) runs above
# any GEMM figure measured on Blackwell (GB200 MAMF 1822, B300 1769), so its curves top the GEMM's.
BLACKWELL_ULTRA = ("B300", "GB300-NVL72")
# Blackwell profiles take training-shape GEMMs (TE's B300 layer benchmark, 0.84 of MAMF), which a
# long-block attention kernel can beat; the bound is then the best-shape GEMM, MAMF (stas00:
# B200 1745.0 of 2250, GB200 1822.0 of 2500 TFLOPS).
BLACKWELL_MAMF = {"B200": 1745.0 / 2250, "GB200-NVL72": 1822.0 / 2500}


def test_builtin_names_are_the_documented_set():
    assert builtin_hardware_names() == EXPECTED_NAMES


def test_every_repo_yaml_is_a_builtin():
    names = {yaml.safe_load(p.read_text())["name"] for p in REPO_PROFILES.glob("*.yaml")}
    assert sorted(names) == sorted(EXPECTED_NAMES)


def _field(profile, dotted: str):
    value = profile
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_every_number_is_sourced(name):
    profile = load_hardware(name)
    missing = [f for f in SOURCED_FIELDS if not profile.sources.get(f, "").strip()]
    assert not missing, f"{name}: no source for {missing}"
    for key in profile.sources:  # no stale keys: each names a real field
        _field(profile, key)
    if profile.host_link_bytes_per_s is not None:  # optional, sourced where given (cost.offload)
        assert profile.sources.get("host_link_bytes_per_s", "").strip(), f"{name}: host link unsourced"


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_efficiencies_are_fractions_and_attention_is_below_gemm(name):
    eff = load_hardware(name).efficiency
    fractions = [eff.gemm]
    for curve in (eff.attention_fwd, eff.attention_bwd):
        # Measured block lengths differ by source (GB200's cuDNN runs cover 2K-32K); every curve
        # spans at least 2K-16K keys.
        tokens = [p.tokens for p in curve]
        assert tokens[0] <= 2048 and tokens[-1] >= 16384
        fractions += [p.efficiency for p in curve]
    for coll in (eff.intra_node, eff.inter_node):
        fractions += [coll.all_reduce, coll.all_gather, coll.reduce_scatter, coll.all_to_all, coll.p2p]
        fractions += [p.efficiency for p in coll.all_to_all_by_group_size]
    assert all(0 < f <= 1 for f in fractions)
    # A fused attention kernel never beats the best plain GEMM (except on Blackwell Ultra, above),
    # and its backward trails its forward.
    if name not in BLACKWELL_ULTRA:
        assert max(p.efficiency for p in eff.attention_fwd) < BLACKWELL_MAMF.get(name, eff.gemm)
    assert all(b.efficiency < f.efficiency for f, b in zip(eff.attention_fwd, eff.attention_bwd))


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_reserve_follows_its_stated_derivation(name):
    # 3% of memory for fragmentation (its source says why it is an assumption); the CUDA context,
    # workspaces and NCCL buffers are counted per plan (cost.runtime_memory).
    profile = load_hardware(name)
    assert profile.memory_reserve_bytes == pytest.approx(0.03 * profile.hbm_bytes, rel=0.005)


def test_figures_reproduce_their_published_measurements():
    h100, a100, a800 = load_hardware("H100-SXM"), load_hardware("A100-80GB"), load_hardware("A800")
    def achieved(profile, level):
        link = getattr(profile, level)
        return link.bandwidth_bytes_per_s * getattr(profile.efficiency, level).all_reduce

    # NVLink ring: ~370 of 450 GB/s (nccl-tests#212); A100 234.89 of 300 (stas00).
    assert achieved(h100, "intra_node") == pytest.approx(370 * GB, rel=0.01)
    assert achieved(a100, "intra_node") == pytest.approx(234.89 * GB, rel=0.01)
    # NDR 46-48 GB/s per NIC; HDR 24 GB/s per NIC.
    assert achieved(h100, "inter_node") == pytest.approx(47 * GB, rel=0.01)
    assert achieved(a800, "inter_node") == pytest.approx(24 * GB, rel=0.01)
    # A100: mean of Azure's random-init cuBLASLt runs (253.7, 256.5, 250.8); H100: MAMF 794.5 TFLOPS.
    assert a100.peak_bf16_flops * a100.efficiency.gemm == pytest.approx((253.7e12 + 256.5e12 + 250.8e12) / 3, rel=0.005)
    assert h100.peak_bf16_flops * h100.efficiency.gemm == pytest.approx(794.5e12, rel=0.005)
    # FP8: Azure's sustained cuBLASLt FP8 at 16384^3 (10,000 warm-ups): H100 1377.3, H200 1366.3.
    assert h100.peak_fp8_flops * h100.efficiency.gemm_fp8 == pytest.approx(1377.3e12, rel=0.001)
    h200 = load_hardware("h200")
    assert h200.peak_fp8_flops * h200.efficiency.gemm_fp8 == pytest.approx(1366.3e12, rel=0.001)
    # FA2 fwd on A100 peaks at 227 TFLOPS (2k); FA3 fwd/bwd on H100 at 16k: 648 / 561 TFLOPS.
    a100_fwd_best = max(p.efficiency for p in a100.efficiency.attention_fwd)
    assert a100_fwd_best * 312e12 == pytest.approx(227e12, rel=0.005)
    assert h100.efficiency.attention_fwd[-1].efficiency * 989e12 == pytest.approx(648e12, rel=0.005)
    assert h100.efficiency.attention_bwd[-1].efficiency * 989e12 == pytest.approx(561e12, rel=0.005)


def test_blackwell_ultra_figures_reproduce_their_sources():
    b300, gb300, gb200 = load_hardware("b300"), load_hardware("gb300-nvl72"), load_hardware("gb200-nvl72")
    # Peaks: B300 2250 / 4500 TFLOPS dense (DGX B300 datasheet), GB300 2500 / 5000 (GB300 NVL72).
    assert (b300.peak_bf16_flops, b300.peak_fp8_flops) == (2250e12, 4500e12)
    assert (gb300.peak_bf16_flops, gb300.peak_fp8_flops) == (2500e12, 5000e12)
    # B300: TE's per-layer GEMM benchmark, 12 GEMMs of 15872 tokens (1.917e13 FLOPs): BF16 the mean
    # of 12.758 and 13.102 ms, FP8 (current scaling, pre-quantized) 6.812 ms, MXFP8 7.161 ms.
    layer_flops = 3 * 2 * 15872 * (4096 * 12288 + 4096 * 4096 + 2 * 4096 * 16384)
    bf16, fp8, mx = (layer_flops / t for t in ((12.758e-3 + 13.102e-3) / 2, 6.812e-3, 7.161e-3))
    assert b300.peak_bf16_flops * b300.efficiency.gemm == pytest.approx(bf16, rel=0.001)
    assert b300.peak_fp8_flops * b300.efficiency.gemm_fp8 == pytest.approx(fp8, rel=0.001)
    assert b300.peak_fp8_flops * b300.efficiency.gemm_mxfp8 == pytest.approx(mx, rel=0.001)
    # GB300 BF16: B300's figure x GB200/B200 MAMF (stas00: 1822.0 / 1745.0).
    assert gb300.peak_bf16_flops * gb300.efficiency.gemm == pytest.approx(bf16 * 1822.0 / 1745.0, rel=0.001)
    # FP8 on the racks, sustained: Azure's cuBLASLt FP8 at 16384^3 after 10,000 warm-ups (GB200
    # 2906.9, GB300 3308.5 TFLOPS) x the share of B300's FP8 MAMF (3353.3) TE's layer GEMMs reach;
    # MXFP8 at its rate over FP8's in TE's B300 layer benchmark.
    # B200, the same die as GB200 with no sustained figure of its own: its short-run MAMF (3432.5)
    # x GB200's sustained-to-short-run ratio (2906.9 / 3615.6).
    b200 = load_hardware("b200")
    for profile, sustained in ((gb200, 2906.9e12), (gb300, 3308.5e12), (b200, 3432.5e12 * 2906.9 / 3615.6)):
        layer_rate = sustained * fp8 / 3353.3e12
        assert profile.peak_fp8_flops * profile.efficiency.gemm_fp8 == pytest.approx(layer_rate, rel=0.001)
        assert profile.peak_fp8_flops * profile.efficiency.gemm_mxfp8 == pytest.approx(layer_rate * mx / fp8, rel=0.001)
    # cuDNN BF16 non-causal on GB300 (cudnn-frontend llama3.1 gb300 CSV), 2K-32K; B300 takes the
    # same fraction of its own peak.
    fwd, bwd = (1805, 1900, 2017, 2014, 1836), (1213, 1429, 1531, 1536, 1427)
    for profile in (gb300, b300):
        assert [p.tokens for p in profile.efficiency.attention_fwd] == [2048, 4096, 8192, 16384, 32768]
        assert [p.efficiency * 2500 for p in profile.efficiency.attention_fwd] == pytest.approx(fwd, abs=1.3)
        assert [p.efficiency * 2500 for p in profile.efficiency.attention_bwd] == pytest.approx(bwd, abs=1.3)
    # Memory: what nvidia-smi reports (275,040 and 284,208 MiB) less GB200's driver reserve, 1,055
    # MiB (its 189,471 MiB against the runtime's 184 GiB); bandwidth 8 TB/s on both (NVIDIA's
    # Blackwell Ultra figure; B300's third-party 7.7 until stop 56).
    gb200_reserve_mib = 189_471 - 184 * 1024
    assert b300.hbm_bytes == (275_040 - gb200_reserve_mib) * 2**20
    assert gb300.hbm_bytes == (284_208 - gb200_reserve_mib) * 2**20
    assert load_hardware("gb200-nvl72").hbm_bytes == 184 * 2**30
    assert (b300.hbm_bandwidth_bytes_per_s, gb300.hbm_bandwidth_bytes_per_s) == (8.0e12, 8.0e12)
    # Nodes: DGX B300 8 GPUs; GB300 NVL72 trays of 4 in one 72-GPU NVLink domain, 900 GB/s NVLink5.
    assert (b300.gpus_per_node, b300.nvlink_domain_gpus) == (8, None)
    assert (gb300.gpus_per_node, gb300.nvlink_domain_gpus) == (4, 72)
    assert b300.intra_node.bandwidth_bytes_per_s == gb300.intra_node.bandwidth_bytes_per_s == 900 * GB
    # One 800 Gb/s ConnectX-8 per GPU: twice GB200's 400 Gb/s ConnectX-7, at its (transferred) efficiency.
    for profile in (b300, gb300):
        assert profile.inter_node.bandwidth_bytes_per_s == 800e9 / 8 == 2 * gb200.inter_node.bandwidth_bytes_per_s
        assert profile.efficiency.inter_node == gb200.efficiency.inter_node


def test_usp_testbed_and_pcie_machines():
    a800 = load_hardware("a800")
    # USP testbed: 400 GB/s bidirectional NVLink, 1.6 Tb/s RDMA per 8-GPU node.
    assert a800.intra_node.bandwidth_bytes_per_s == 200 * GB
    assert a800.inter_node.bandwidth_bytes_per_s * a800.gpus_per_node * 8 == pytest.approx(1.6e12)
    assert a800.peak_bf16_flops == 312e12
    for name in ("L20", "L40S"):
        profile = load_hardware(name)
        assert profile.intra_node.kind == "pcie"
        # 16 GT/s x 16 lanes with 128b/130b coding, per direction.
        assert profile.intra_node.bandwidth_bytes_per_s == pytest.approx(16e9 * 16 * 128 / 130 / 8, rel=0.001)
    assert load_hardware("L20").peak_bf16_flops == 119.5e12


@pytest.mark.parametrize(
    ("spelling", "name"),
    [
        ("h100", "H100-SXM"),
        ("H100", "H100-SXM"),
        ("h100-sxm", "H100-SXM"),
        ("A100_40GB", "A100-40GB"),
        ("a800", "A800"),
        ("910b", "Ascend-910B"),
        ("ascend910b", "Ascend-910B"),
        ("mi300x", "MI300X"),
        ("l40s", "L40S"),
    ],
)
def test_names_and_aliases(spelling, name):
    assert load_hardware(spelling).name == name


@pytest.mark.parametrize("spelling", ["A100", "a100", "a-100"])
def test_a100_alone_is_ambiguous_and_asks_which(spelling):
    with pytest.raises(UserInputError) as info:
        load_hardware(spelling)
    assert str(info.value) == (f"hardware {spelling!r} is ambiguous: say which, A100-40GB or A100-80GB "
                               "(their memory decides which plans fit)")


def test_unknown_name_suggests_the_closest_in_one_short_line():
    with pytest.raises(UserInputError) as info:
        load_hardware("gb200")
    message = str(info.value)
    assert message == ("unknown hardware 'gb200'. Did you mean GB200-NVL72 (or B200, H200)? "
                       f"README.md's \"Hardware:\" lists all {len(EXPECTED_NAMES)}; "
                       "or give a profile YAML's path (its format: hardware_profiles/).")
    assert len(message) <= 200


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_yaml_round_trip(tmp_path, name):
    profile = load_hardware(name)
    path = tmp_path / "custom.yaml"
    path.write_text(profile_to_yaml(profile), encoding="utf-8")
    assert read_hardware_file(path) == profile
    assert load_hardware(str(path)) == profile


def _user_file(tmp_path, mutate) -> Path:
    data = load_hardware("A800").model_dump(mode="json")
    mutate(data)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _set(dotted, value):
    def mutate(data):
        *parents, leaf = dotted.split(".")
        for part in parents:
            data = data[part]
        data[leaf] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.pop("peak_bf16_flops"), "peak_bf16_flops: Field required"),
        (lambda d: d.update(nvlink_gen=4), "nvlink_gen: Extra inputs are not permitted"),
        (_set("hbm_bytes", -1), "hbm_bytes: Input should be greater than or equal to 1048576"),
        (_set("peak_bf16_flops", 0), "peak_bf16_flops: Input should be greater than or equal to 100000000"),
        # A typo a million-fold too small, a YAML boolean, a reserve above the memory: refused, not
        # planned into NaN, 1e41-day steps or "no plan fits".
        (_set("peak_bf16_flops", 1e-300), "peak_bf16_flops: Input should be greater than or equal to 100000000"),
        (_set("intra_node.bandwidth_bytes_per_s", 1e-30),
         "intra_node.bandwidth_bytes_per_s: Input should be greater than or equal to 1000000"),
        (_set("peak_bf16_flops", True), "peak_bf16_flops: expected a number, got true"),
        (_set("efficiency.gemm", True), "efficiency.gemm: expected a number, got true"),
        # Hand edits pydantic's lax mode would take as 8 and true (fileio.validate_strict).
        (_set("gpus_per_node", 8.0), "gpus_per_node: expected a whole number, got 8.0"),
        (_set("gpus_per_node", "8"), 'gpus_per_node: expected a whole number, got "8"'),
        (_set("efficiency.attention_fp8", "yes"), 'efficiency.attention_fp8: expected true or false, got "yes"'),
        (_set("efficiency.attention_fp8", 1), "efficiency.attention_fp8: expected true or false, got 1"),
        (_set("memory_reserve_bytes", 2e11), "memory_reserve_bytes 2e+11 must be below hbm_bytes"),
        (_set("gpus_per_node", 0), "gpus_per_node: Input should be greater than 0"),
        (_set("intra_node.latency_s", -1e-6), "intra_node.latency_s: Input should be greater than or equal"),
        (_set("efficiency.gemm", 1.5), "efficiency.gemm: 1.5 is out of range: it must be at most 1"),
        (_set("efficiency.inter_node.p2p", 0), "efficiency.inter_node.p2p: Input should be greater than 0"),
        # Each tier names its own kinds, in one error (a union of both tiers' made two).
        (_set("intra_node.kind", "infiniband"), "intra_node.kind: Input should be 'nvlink', 'pcie', 'xgmi' or 'hccs'"),
        (_set("inter_node.kind", "nvlink"), "inter_node.kind: Input should be 'infiniband', 'roce' or 'ethernet'"),
        (_set("memory_reserve_bytes", "lots"), 'memory_reserve_bytes: expected a number, got "lots"'),
        (_set("base_profile", "H99"), "base_profile: 'H99' names no built-in hardware profile; one of "
                                      + ", ".join(EXPECTED_NAMES)),
        # Ambiguous as --hardware is: its memory decides which plans fit.
        (_set("base_profile", "A100"), "base_profile: 'A100' names no built-in hardware profile"),
    ],
)
def test_bad_user_profile_names_file_and_field(tmp_path, mutate, expected):
    path = _user_file(tmp_path, mutate)
    with pytest.raises(UserInputError) as info:
        load_hardware(str(path))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"hardware profile file {path} is invalid: ")
    assert expected in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [A800\npeak_bf16_flops: 1\n", "is malformed"),
        ("- A800\n- H100\n", "must hold a mapping, got a list"),
        ("", "must hold a mapping, got nothing (an empty file or null)"),
    ],
)
def test_unparseable_user_profile(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserInputError) as info:
        load_hardware(str(path))
    assert "\n" not in str(info.value) and str(path) in str(info.value) and expected in str(info.value)


def test_missing_user_profile(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        load_hardware(str(tmp_path / "cluster.yaml"))


def test_a_builtin_given_as_a_profile_file_is_named(tmp_path, monkeypatch):
    # Was "hardware profile file a800.yaml does not exist", with no word of the built-in A800.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserInputError) as info:
        load_hardware("a800.yaml")
    assert str(info.value) == ("hardware profile file a800.yaml does not exist; for the built-in profile give its "
                               "name alone: A800")


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_builtins_are_their_own_gpu(name):
    # Their own name is the cost model's key (cost.families.profile_key); a base_profile would also
    # recurse through the catalog while it loads.
    profile = load_hardware(name)
    assert profile.base_profile is None and builtin_gpu(profile) == name


@pytest.mark.parametrize(("spelt", "name"), [("H100-SXM", "H100-SXM"), ("h100", "H100-SXM"),
                                             ("gb200 nvl72", "GB200-NVL72"), ("910B", "Ascend-910B")])
def test_base_profile_is_forgiving_and_kept_as_the_builtin_spells_it(tmp_path, spelt, name):
    path = _user_file(tmp_path, lambda d: d.update(name="my-cluster", base_profile=spelt))
    profile = read_hardware_file(path)
    assert profile.base_profile == builtin_profile_name(spelt) == name
    assert builtin_gpu(profile) == name and read_hardware_file(path) == profile


def test_a_user_profile_without_base_profile_is_its_names_gpu():
    a800 = load_hardware("A800")
    assert builtin_gpu(a800.model_copy(update={"name": "a800"})) == "A800"  # the tables match any case
    assert builtin_gpu(a800.model_copy(update={"name": "my-a800"})) is None
    assert builtin_gpu(a800.model_copy(update={"name": "my-a800", "base_profile": "A800"})) == "A800"


def test_a_profile_cannot_ask_for_unfused_attention(tmp_path):
    from sp_planner.cost.attention_kernels import UNFUSED, with_attention_kernel

    path = tmp_path / "unfused.yaml"
    path.write_text(profile_to_yaml(with_attention_kernel(load_hardware("h100-sxm"), UNFUSED)), encoding="utf-8")
    with pytest.raises(UserInputError) as info:
        read_hardware_file(path)
    assert "\n" not in str(info.value) and "attention_unfused" in str(info.value)
    assert "is not a profile setting" in str(info.value)


# cuDNN's RMSNorm at 8 LLM shapes (NVIDIA/cudnn-frontend benchmark/norms/results at df73764): the
# median of the forward and backward GB/s over the datasheet bandwidth the profile states.
NORM_MEDIAN_GB_S = {"H200": (3645.0, 4800), "GB200-NVL72": (5846.2, 8000), "GB300-NVL72": (5961.2, 8000)}
# Same die, no norm benchmark of their own: the measured share transfers.
MEMORY_BOUND_FROM = {"H100-SXM": "H200", "H800": "H200", "A100-80GB": "H200", "A100-40GB": "H200", "A800": "H200",
                     "B200": "GB200-NVL72", "B300": "GB300-NVL72"}


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_memory_bound_share_is_stated_and_follows_its_benchmark(name):
    text = yaml.safe_load((REPO_PROFILES / f"{name.lower()}.yaml").read_text())
    assert "memory_bound" in text["efficiency"], f"{name}: state efficiency.memory_bound (a default would hide it)"
    share = load_hardware(name).efficiency.memory_bound
    measured = MEMORY_BOUND_FROM.get(name, name)
    if measured in NORM_MEDIAN_GB_S:
        gb_s, datasheet = NORM_MEDIAN_GB_S[measured]
        assert share == pytest.approx(gb_s / datasheet, abs=0.005)
    else:  # no normalization-kernel benchmark of the part: the stated assumption
        assert share == 0.8 and "assumption" in load_hardware(name).sources["efficiency.memory_bound"]
