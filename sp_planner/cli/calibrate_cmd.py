"""`sp-calibrate`: time collectives and kernels on this machine (or cluster), fit alpha-beta and
efficiency curves, and write a hardware profile that `sp-plan --hardware FILE` uses.

Importable without torch: torch is imported only inside the launched ranks (sp_planner.executor),
or, under an existing torchrun/SLURM launch, once this process has become a rank.
Exit codes: 0 profile written; 1 a rank failed or hung; 2 bad input.
"""

from __future__ import annotations

import datetime
import os
import re
import sys
import textwrap
import tempfile
from pathlib import Path
from collections.abc import Mapping
from typing import Annotated, Optional

import typer

from sp_planner.calibration import (
    Measurements,
    build_profile,
    build_schedule,
    builtin_for_device,
    calibration_data,
    read_measurements,
)
from sp_planner.calibration.measurements import WHAT as MEASUREMENTS_WHAT, measurements_from
from sp_planner.calibration.profile_file import profile_yaml_text
from sp_planner.calibration.summary import print_summary
from sp_planner.catalog import load_hardware, load_model
from sp_planner.catalog.hardware import builtin_profile_name
from sp_planner.cli.common import check_finite_seconds, file_name, run_app
from sp_planner.cli.joined import joined_launch
from sp_planner.cli.progress import delayed_progress
from sp_planner.cli.run_modes import available_bytes
from sp_planner.cli.terminal import pack_words, stdout_console, terminal_columns
from sp_planner.destination import (
    check_file_destination,
    deliver_text,
    keep_text,
    refuse_reading_file_as_output,
    same_destination,
)
from sp_planner.errors import UserInputError
from sp_planner.executor.config import Device
from sp_planner.executor.devices import check_local_cpu_ranks, cuda_device_count
from sp_planner.executor.kernel_rules import FLASH, head_dim_problem
from sp_planner.executor.launch import LaunchSpec, run_local, torchrun_args
from sp_planner.fileio import read_structured
from sp_planner.planfile import is_plan_file
from sp_planner.specs.hardware import HardwareProfile
from sp_planner.cli.help_format import PlainHelpCommand, wrap_argv

EXIT_FAILED = 1
WORKER_MODULE = "sp_planner.executor.calibrate.worker"
# --timeout's default, which --measurements tells apart from a timeout the user gives.
DEFAULT_TIMEOUT_S = 600
MEASUREMENTS_FILE = "measurements.json"  # = executor.calibrate.worker.MEASUREMENTS_FILE (that module imports torch)
EPILOG = """\
Examples:

  sp-calibrate --device cpu --nproc-per-node 2 --quick --out cpu.yaml

  sp-calibrate --device cuda --out my-cluster.yaml --save-measurements raw.json

On every node of a cluster:

  torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HEAD:29500 \\
    -m sp_planner.cli.calibrate_cmd --device cuda --out my-cluster.yaml

  sp-calibrate --measurements raw.json --base H100-SXM --out refit.yaml

Exit codes: 0 profile written, 1 a rank failed or hung, 2 bad input.
"""

app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)


def _joined_shape(nproc_per_node: int | None) -> tuple[int, int]:
    """(world size, ranks per node) of the launch this process joined."""
    world = int(os.environ.get("WORLD_SIZE") or os.environ["SLURM_NTASKS"])
    per_node = os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("SLURM_NTASKS_PER_NODE", "")
    match = re.match(r"\d+", per_node)  # SLURM writes e.g. "8(x2)"
    return world, int(match.group()) if match else (nproc_per_node or world)


def _measure_locally(schedule, timeout_s: float) -> Measurements | int:
    """Measure on local ranks (progress on stderr); the measurements, or the exit code of a failure.
    The ranks' output goes to a log named (and kept) only when they fail."""
    fd, log_name = tempfile.mkstemp(prefix="sp-calibrate-", suffix=".log")
    os.close(fd)
    log_path = Path(log_name)
    with tempfile.TemporaryDirectory(prefix="sp-calibrate-") as tmp, delayed_progress("measuring") as update:
        result_dir = Path(tmp)
        schedule_path = result_dir / "schedule.json"
        schedule_path.write_text(schedule.model_dump_json())
        spec = LaunchSpec(nproc_per_node=schedule.world_size, rdzv_id="sp-calibrate")
        command = [sys.executable, "-m", "torch.distributed.run", *torchrun_args(spec), "-m", WORKER_MODULE,
                   "--schedule", str(schedule_path), "--result-dir", str(result_dir), "--timeout", str(timeout_s)]
        outcome = run_local(command, result_dir=result_dir, world_size=schedule.world_size, timeout_s=timeout_s,
                            log_path=log_path, watch=lambda: update(0, None, _rank0_stage(result_dir)),
                            nccl_timeout_s=timeout_s if schedule.device == "cuda" else None)
        if outcome.failure is not None:
            sys.stderr.write(f"error: {outcome.failure}; the ranks' output is in {log_path}\n")
            if outcome.interrupted:
                raise SystemExit(outcome.returncode)  # said here, in full: not the generic "interrupted"
            return EXIT_FAILED
        measured = read_measurements(result_dir / MEASUREMENTS_FILE)
    log_path.unlink(missing_ok=True)
    return measured


def _rank0_stage(result_dir: Path) -> str:
    try:
        return f"measuring: {(result_dir / 'rank0.stage').read_text()}"
    except OSError:
        return "starting the ranks"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or "device"


def _measure(*, device: Device, model: str | None, nproc_per_node: int | None, quick: bool, has_base: bool,
             timeout_s: float) -> Measurements | int:
    """Measure here (local ranks) or as one rank of a torchrun/SLURM launch: the measurements, or
    the exit code to end with."""
    model_spec = load_model(model) if model is not None else None
    if device == "cuda" and model_spec is not None:
        # The schedule times the raw flash op at the model's head dim (bf16).
        problem = head_dim_problem(FLASH, model_spec.head_dim, elem_bytes=2)
        if problem:
            raise UserInputError(f"--model {model}: {problem}, which sp-calibrate times; pick another --model")
    joined = joined_launch()
    if joined:
        world, per_node = _joined_shape(nproc_per_node)
    else:
        gpus = cuda_device_count() if device == "cuda" else None
        if gpus == 0:
            raise UserInputError("--device cuda: no CUDA device is visible here; use --device cpu")
        world = per_node = nproc_per_node or gpus or 2
        if world == 1 and device == "cpu" and not has_base:
            raise UserInputError("one CPU rank times no collective and no built-in profile describes a CPU; "
                                 "launch 2+ ranks (--nproc-per-node 2) or pass --base NAME")
        if gpus is not None and world > gpus:
            raise UserInputError(f"--nproc-per-node {world} exceeds the {gpus} CUDA devices here")
        if device == "cpu":
            check_local_cpu_ranks(world, available_bytes("cpu", None))
    schedule = build_schedule(device=device, quick=quick, world_size=world, ranks_per_node=per_node,
                              model=model_spec)
    if joined:
        from sp_planner.executor.calibrate.worker import run_calibration  # imports torch

        joined_raw = run_calibration(schedule, None, timeout_s)
        return 0 if joined_raw is None else joined_raw  # None: not rank 0, which writes the profile
    return _measure_locally(schedule, timeout_s)


@app.command(cls=PlainHelpCommand, epilog=EPILOG)
def calibrate(
    *,
    out: Annotated[Path, typer.Option(
        parser=file_name, metavar="<path>", help="Write the hardware profile here (.yaml).")],
    device: Annotated[Device, typer.Option(help="cpu (gloo) or cuda (NCCL).")] = "cpu",
    nproc_per_node: Annotated[Optional[int], typer.Option(
        min=1, show_default="the GPU count with cuda, 2 with cpu", help="Local ranks.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Fewer sizes, lengths and iterations.")] = False,
    base: Annotated[Optional[str], typer.Option(
        show_default="the built-in profile matching the GPU",
        help="Built-in profile (or .yaml) for figures not measured and for the comparison.")] = None,
    model: Annotated[Optional[str], typer.Option(
        show_default="Llama-3-8B's on GPUs, a small dense layer on CPU",
        help="Time this model's layer GEMMs at its head_dim.")] = None,
    name: Annotated[Optional[str], typer.Option(show_default="device and date", help="Profile name.")] = None,
    measurements: Annotated[Optional[Path], typer.Option(
        help="Build the profile from measurements saved earlier instead of measuring.")] = None,
    save_measurements: Annotated[Optional[Path], typer.Option(
        parser=file_name, metavar="<path>", help="Also keep the raw measurements (JSON).")] = None,
    timeout: Annotated[float, typer.Option(
        min=1, help="Seconds before a hung calibration is killed.")] = DEFAULT_TIMEOUT_S,
) -> int:
    """Measure collectives, GEMMs and attention here and write a hardware profile for sp-plan."""
    if out.suffix.lower() not in (".yaml", ".yml"):
        raise UserInputError(f"--out {out} must end in .yaml or .yml (sp-plan --hardware reads YAML profiles)")
    check_finite_seconds("--timeout", timeout)
    if name is not None:
        _check_name(name)
    for other, option in ((save_measurements, "--save-measurements"), (measurements, "--measurements")):
        if other is not None and same_destination(out, other):
            raise UserInputError(f"--out and {option} both name {out}: the profile would overwrite the "
                                 "measurements; give them different files")
    # A base profile or model config the run reads is the user's: never written over.
    inputs = (("--base", base), ("--model", model), ("--measurements", measurements))
    refuse_reading_file_as_output(out, option="--out", inputs=inputs)
    if save_measurements is not None:
        refuse_reading_file_as_output(save_measurements, option="--save-measurements", inputs=inputs)
    check_file_destination(out, option="--out")  # before minutes of measuring
    if save_measurements is not None:
        check_file_destination(save_measurements, option="--save-measurements")
    if measurements is not None:
        _refuse_measuring_options(measurements, {
            "--device": device != "cpu", "--nproc-per-node": nproc_per_node is not None, "--quick": quick,
            "--model": model is not None, "--timeout": timeout != DEFAULT_TIMEOUT_S})
    base_profile: HardwareProfile | None = load_hardware(base) if base is not None else None
    if measurements is not None:
        raw = _saved_measurements(measurements)
    else:
        measured = _measure(device=device, model=model, nproc_per_node=nproc_per_node, quick=quick,
                            has_base=base_profile is not None, timeout_s=timeout)
        if isinstance(measured, int):  # an exit code: a failure, or a rank other than 0
            return measured
        raw = measured
    raw_text = raw.model_dump_json(indent=1) + "\n"
    if save_measurements is not None:
        deliver_text(save_measurements, raw_text, what="measurements JSON")
    try:
        data = calibration_data(raw)
        matched = builtin_for_device(data.environment.device_name)
        if base_profile is None and matched is not None:
            base_profile = load_hardware(matched)
        # The measurements' own day (a refit of old measurements is dated by them, not today).
        date = data.environment.measured_on or datetime.date.today().isoformat()
        if data.environment.measured_on is None:
            sys.stderr.write(textwrap.fill("warning: the measurements carry no date (written before sp-planner "
                                           "dated them); the profile is dated today", width=80,
                                           subsequent_indent="  ") + "\n")
        result = build_profile(data, base=base_profile, date=date,
                               name=name or f"{matched or _slug(data.environment.device_name)}-{date}")
    except UserInputError as err:
        if measurements is not None or save_measurements is not None:
            raise  # the measurements are in a file already
        # Minutes of measuring that no profile could be built from (a fit the noise defeats, a figure
        # with no base to take it from) are kept, as a result that cannot be written is (deliver_text).
        kept = keep_text(raw_text, name=MEASUREMENTS_FILE)
        if kept is None:
            raise
        raise UserInputError(f"{err}; the measurements are kept at {kept}: sp-calibrate --measurements {kept} "
                             "builds the profile from them without measuring again") from None
    for line in result.warnings:  # wrapped to the 80 columns of a terminal
        sys.stderr.write(textwrap.fill(f"warning: {line}", width=80, subsequent_indent="  ",
                                       break_on_hyphens=False) + "\n")
    deliver_text(out, profile_yaml_text(result.profile), what="profile")
    console = stdout_console()
    print_summary(data, base_profile, console)
    # Plain lines of the terminal's width: the path whole, the command quoted and joined by backslashes.
    width = terminal_columns()
    lines = pack_words(["Wrote", f"{out}.", "Plan", "with", "it:"], width)
    command = ["sp-plan", "--hardware", str(out), "--model", "...", "--nodes", "...", "--seq-len", "..."]
    lines += [f"  {line}" for line in wrap_argv(command, width - 2)]
    console.file.write("\n".join(lines) + "\n")
    return 0


def _check_name(name: str) -> None:
    """--name: a profile's name is the key of the cost model's GPU tables where it names a built-in
    profile (cost.families.profile_key): a CPU measured as "H100-SXM" was timed with the H100's
    kernel benchmarks and best published MFU, and an empty name fell back to the default unsaid."""
    if not name.strip():
        raise UserInputError("--name is empty; give the profile a name, or drop --name for the default "
                             "(the device and the date)")
    builtin = builtin_profile_name(name)
    if builtin is not None:
        raise UserInputError(f"--name {name} names the built-in profile {builtin}, whose kernel tables and best "
                             "published MFU sp-plan would apply to these measurements; give another name, e.g. "
                             f"{builtin}-measured (or drop --name for the device and the date)")


def _refuse_measuring_options(path: Path, given: Mapping[str, bool]) -> None:
    """--measurements builds the profile from saved measurements: an option that shapes a measurement
    would be accepted and do nothing (--device cuda, --quick, --model ... were ignored without a word)."""
    flags = [flag for flag, is_given in given.items() if is_given]
    if flags:
        raise UserInputError(f"{', '.join(flags)}: --measurements {path} measures nothing (it refits saved "
                             f"measurements), so {'this option' if len(flags) == 1 else 'these options'} would "
                             f"do nothing; drop {' and '.join(flags)}, or drop --measurements to measure again")


def _saved_measurements(path: Path) -> Measurements:
    """--measurements: what --save-measurements wrote. A plan file (sp-plan --out, also JSON) is
    named as one rather than listed field by field as extra inputs."""
    data = read_structured(path, what=MEASUREMENTS_WHAT)
    if is_plan_file(data):
        raise UserInputError(f"{path} is a plan file (sp-plan --out); --measurements takes the raw measurements "
                             "that sp-calibrate --save-measurements wrote")
    return measurements_from(data, path)


def main(argv: list[str] | None = None) -> None:
    run_app(app, argv, prog_name="sp-calibrate", once_per_node=True)


if __name__ == "__main__":
    main()
