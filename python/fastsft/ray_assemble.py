"""The work units of a Ray run, and their assembly into one dataset by the Rust core.

Each work unit is a complete dataset the Rust pipeline wrote from a run of consecutive input
files, or from one round-robin share of one file. `assemble` hands the units to
`_core.assemble_units` (rust/assemble.rs), which writes the one dataset: the samples in input
order, the rejects naming the inputs as the user gave them, the run's reject bar checked over all
units, and the manifest built by the same code that builds a single-machine run's (so its bytes,
fingerprint and plan are that run's), all under a temporary name renamed into place when complete.

What this does not do: encode, decide anything about records, or write any dataset file itself.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastsft import _core
from fastsft.ray_storage import Place


@dataclass
class Unit:
    """One work unit: consecutive input files `files` (global indices) read whole, or one file
    read as share `share` of `shares` (every `shares`-th record). Once finished, `directory`
    holds a dataset, or (`rejected_only`) only the rejects of a unit in which every record was
    rejected (the pipeline writes no dataset then), with its counts and inputs."""

    files: list[int]
    share: int
    shares: int
    directory: Path
    rejected_only: dict[str, Any] | None = None
    # Where the unit is written: `directory` itself when the work directory is local, else its
    # prefix on the store (the driver copies it to `directory` to assemble).
    staged: Place = field(default_factory=lambda: Place(None, "", ""))
    # The local paths the unit read its files as, when not the inputs' own (copies of objects).
    read_as: list[str] | None = None

    @property
    def name(self) -> str:
        return self.directory.name


def _plan_json(units: list[Unit], **plan: Any) -> dict[str, Any]:
    plan["output"] = os.fspath(plan["output"])
    plan["units"] = [
        {
            "directory": os.fspath(u.directory),
            "files": u.files,
            "share": u.share,
            "shares": u.shares,
            "rejected_only": u.rejected_only,
            "read_as": u.read_as,
        }
        for u in units
    ]
    return plan


def assemble(
    units: list[Unit],
    *,
    files: list[str],
    sizes: list[int],
    read_as: list[str],
    output: Path,
    overwrite: bool,
    max_reject_fraction: float | None,
    template: str | None,
    report: dict[str, Any],
) -> dict[str, Any]:
    """Writes the dataset made of the finished `units` at `output`; returns its counts.

    `files`: the inputs as the user named them, `sizes` their sizes (the manifest's plan records
    them), `read_as`: as the units read them (the paths their reject lines name). `template`: as
    the user named it. `report`: written as `report.json`, with the assembly's time added.
    Raises TooManyRejectsError (the rejects kept at `OUTPUT.rejects.jsonl`) as a local run does."""
    assembly = _plan_json(
        units,
        output=output,
        overwrite=overwrite,
        max_reject_fraction=max_reject_fraction,
        files=files,
        sizes=sizes,
        read_as=read_as,
        template=template,
        report=report,
    )
    counts: dict[str, Any] = json.loads(_core.assemble_units(json.dumps(assembly, ensure_ascii=False)))
    return counts


class UnitByUnit:
    """The same assembly, fed unit by unit as units finish (`add`, in any order): the samples of
    every unit whose predecessors are all in are written at once, while later units still
    encode, so that little is left to copy and hash once the last unit is done. The arguments are
    `assemble`'s, less `report` (given to `finish`). Until `finish` the dataset is under a
    temporary name; `abandon` (or an error in `add` or `finish`) removes it."""

    def __init__(self, units: list[Unit], **plan: Any) -> None:
        self._index = {id(u): k for k, u in enumerate(units)}
        plan_json = _plan_json(units, report={}, **plan)
        self._core = _core.UnitAssembler(json.dumps(plan_json, ensure_ascii=False))

    def add(self, unit: Unit) -> None:
        rejected_only = None if unit.rejected_only is None else json.dumps(unit.rejected_only, ensure_ascii=False)
        self._core.add(self._index[id(unit)], rejected_only)

    def finish(self, report: dict[str, Any]) -> dict[str, Any]:
        counts: dict[str, Any] = json.loads(self._core.finish(json.dumps(report)))
        return counts

    def abandon(self) -> None:
        self._core.abandon()
