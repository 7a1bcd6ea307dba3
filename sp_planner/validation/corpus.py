"""The validation corpus: published measured training runs, one YAML file per source.

Each file holds a `source` (what was published where, and where the figures were read), optional
inline `models` (architectures the catalog lacks), `defaults` shared by its rows, and `rows`. A
row pins every degree of the run and says what its published figure means (which quantity, and
for FLOP-based figures which FLOP convention). Rows the cost model cannot express (FP8, virtual
pipeline stages, hardware the catalog lacks, ...) stay in the corpus with `expressible: false`
and the reason, and are skipped when scoring. Rows whose measurement the framework's own
maintainers filed as a performance regression (`regression`: the issue or pull request and what
it says) are expressible but not scored either: they measure a defect, not the recipe as designed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
from pydantic import Field

from sp_planner.catalog import load_model
from sp_planner.catalog.names import looks_like_path
from sp_planner.cost.cuda_graphs import check_graph_scopes
from sp_planner.catalog.hardware import load_hardware
from sp_planner.cost.dsa import dsa_untimed
from sp_planner.errors import UserInputError
from sp_planner.fileio import errors_line, read_structured, refuse_foreign, validate_strict
from sp_planner.specs.base import FrozenModel
from sp_planner.specs.model import ModelSpec
from sp_planner.validation.corpus_row import CorpusRow, Source


class CorpusFile(FrozenModel):
    source: Source
    models: tuple[ModelSpec, ...] = ()
    defaults: dict[str, Any] = {}
    rows: tuple[Any, ...] = Field(min_length=1)  # each checked as a CorpusRow after defaults merge


class Corpus(FrozenModel):
    sources: tuple[Source, ...]
    # Architectures defined in the corpus files, by name (looked up before the catalog).
    models: dict[str, ModelSpec]
    rows: tuple[CorpusRow, ...]

    def source(self, source_id: str) -> Source:
        return next(s for s in self.sources if s.id == source_id)


def _one_line(err: pydantic.ValidationError) -> str:
    return errors_line(err, whole="(row)")


def _read_file(path: Path) -> tuple[CorpusFile, tuple[CorpusRow, ...]]:
    data = read_structured(path, what="corpus")
    if not isinstance(data, dict):
        raise UserInputError(f"corpus file {path} must hold a mapping with source, defaults and rows")
    refuse_foreign(CorpusFile, data, what="corpus", path=path)
    try:
        parsed = validate_strict(CorpusFile, data)
    except pydantic.ValidationError as err:
        raise UserInputError(f"corpus file {path} is invalid: {_one_line(err)}") from None
    rows = []
    inline = {spec.name for spec in parsed.models}  # the file's own models, named, not paths
    for index, raw in enumerate(parsed.rows, start=1):
        label = f"row {index}" + (f" ({raw['id']})" if isinstance(raw, dict) and "id" in raw else "")
        if not isinstance(raw, dict):
            raise UserInputError(f"corpus file {path} {label} must be a mapping")
        try:
            row = validate_strict(CorpusRow, {**parsed.defaults, **raw, "source": parsed.source.id})
        except pydantic.ValidationError as err:
            raise UserInputError(f"corpus file {path} {label} is invalid: {_one_line(err)}") from None
        rows.append(row.model_copy(update={"model": row.model if row.model in inline else _beside(path, row.model),
                                           "hardware": _beside(path, row.hardware)}))
    return parsed, tuple(rows)


def _beside(corpus_file: Path, name: str) -> str:
    """A row's model or hardware given as a relative path (a config.json, a profile .yaml) names a
    file beside the corpus file, wherever sp-validate runs; a built-in name stays as it is."""
    if not looks_like_path(name) or Path(name).is_absolute():
        return name
    return str(corpus_file.parent / name)


def corpus_files(path: Path) -> list[Path]:
    """A corpus is one YAML file or a folder of them (read in name order)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        if not files:
            raise UserInputError(f"corpus folder {path} holds no .yaml files")
        return files
    if not path.exists():
        raise UserInputError(f"corpus {path} does not exist; give a corpus .yaml file or a folder of them")
    return [path]


def load_corpus(path: Path) -> Corpus:
    """Read and check every file; duplicate source ids, row ids or model names are errors."""
    sources: list[Source] = []
    models: dict[str, ModelSpec] = {}
    rows: list[CorpusRow] = []
    row_files: list[Path] = []
    for file in corpus_files(path):
        parsed, file_rows = _read_file(file)
        if any(s.id == parsed.source.id for s in sources):
            raise UserInputError(f"corpus file {file}: source id {parsed.source.id} is used by another file")
        sources.append(parsed.source)
        for spec in parsed.models:
            if spec.name in models:
                raise UserInputError(f"corpus file {file}: model {spec.name} is defined twice")
            models[spec.name] = spec
        seen = {r.id for r in rows}
        for row in file_rows:
            if row.id in seen:
                raise UserInputError(f"corpus file {file}: row id {row.id} is used twice")
            seen.add(row.id)
        rows.extend(file_rows)
        row_files.extend(file for _ in file_rows)
    for file, row in zip(row_files, rows):
        _check_routing(file, row, models)
        _check_graphs(file, row, models)
        _check_timed(file, row, models)
    return Corpus(sources=tuple(sources), models=models, rows=tuple(rows))


def _check_routing(file: Path, row: CorpusRow, models: dict[str, ModelSpec]) -> None:
    """A non-default routing, dispatcher or expert GEMM needs experts; checked once every file's models
    are read."""
    if row.hybridep_sms is not None and row.moe_dispatcher != "hybridep":
        raise UserInputError(f"corpus file {file} row {row.id}: hybridep_sms is the HybridEP dispatcher's SM count; "
                             "state moe_dispatcher hybridep or drop it")
    setting = row.moe_setting()
    if setting is None:
        return
    if row.model in models:
        model = models[row.model]
    else:
        model = load_model(row.model)
    if model.moe is None:
        raise UserInputError(f"corpus file {file} row {row.id}: {setting} needs an MoE model, and {model.name} "
                             f"has no experts; drop it or name an MoE model")


def _check_graphs(file: Path, row: CorpusRow, models: dict[str, ModelSpec]) -> None:
    """The row's CUDA graph scopes must be ones Megatron accepts for its model (cost.cuda_graphs)."""
    if not row.cuda_graph_scope:
        return
    model = models[row.model] if row.model in models else load_model(row.model)
    try:
        check_graph_scopes(model, frozenset(row.cuda_graph_scope))
    except ValueError as err:
        raise UserInputError(f"corpus file {file} row {row.id}: {err}") from None


def _check_timed(file: Path, row: CorpusRow, models: dict[str, ModelSpec]) -> None:
    """A row's model must be one the cost model times on its hardware: DeepSeek Sparse Attention only
    where sparse MLA's kernel rates are published (cost.dsa)."""
    model = models[row.model] if row.model in models else load_model(row.model)
    if model.dsa is None:
        return
    problem = dsa_untimed(model, load_hardware(row.hardware))
    if problem is not None:
        raise UserInputError(f"corpus file {file} row {row.id}: {problem}")


def default_corpus_path() -> Path:
    """validation/corpus at the root of the source tree this package runs from."""
    return Path(__file__).resolve().parents[2] / "validation" / "corpus"
