"""Shared fixtures: the Qwen2.5 tokenizer, the real corpora, and each corpus prepared once per session.

Expensive things (running `fastsft prep` over the corpora, the `transformers` reference outputs) are
session-scoped and computed once. Tests may add rows to `REPORT`; they are printed as tables at the
end of the run (`pytest_terminal_summary`), whether the tests pass or fail.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reference import CORPORA, TOKENIZERS, Conversation, Reject, marked_template, read_records, to_conversation

QWEN = TOKENIZERS / "qwen2.5"

# Real corpora the parity tests run on (assets/SOURCES.md). gsm8k and belle are Q/A files in no chat
# format and are left out on purpose.
PARITY_CORPORA = [
    "medicalgpt_sharegpt_zh_1k",  # Chinese ShareGPT, up to 330 messages, 7 bad records
    "llamafactory_alpaca_zh_demo",
    "llamafactory_alpaca_en_demo",
    "llamafactory_glaive_toolcall_en_demo",  # function_call / observation turns, tools
    "llamafactory_glaive_toolcall_zh_demo",
    "llamafactory_identity",  # literal {{name}} in content: must not be templated
    "fastchat_dummy_conversation",
]

# {table title: {row: {column: value}}}, printed after the run.
REPORT: dict[str, dict[str, dict[str, Any]]] = {}


def report(table: str, row: str, **columns: Any) -> None:
    REPORT.setdefault(table, {}).setdefault(row, {}).update(columns)


def pytest_terminal_summary(terminalreporter) -> None:
    for title, rows in REPORT.items():
        columns = list(dict.fromkeys(c for r in rows.values() for c in r))
        header = ["corpus", *columns]
        body = [[name, *(str(r.get(c, "")) for c in columns)] for name, r in rows.items()]
        widths = [max(len(x) for x in col) for col in zip(header, *body)]
        terminalreporter.write_sep("-", title)
        for line in [header, ["-" * w for w in widths], *body]:
            terminalreporter.write_line("  ".join(x.ljust(w) for x, w in zip(line, widths)))


@dataclass
class Prepared:
    """A `fastsft prep` output directory, loaded."""

    out: Path
    inputs: list[Path]
    summary: dict[str, Any]
    input_ids: np.ndarray
    loss_mask: np.ndarray
    offsets: np.ndarray
    origin: np.ndarray
    manifest: dict[str, Any]
    rejects: list[dict[str, Any]]

    def samples(self, corpus: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """{line: (ids, mask)} of the samples written from one input corpus."""
        index = [p.name for p in self.inputs].index(f"{corpus}.jsonl.gz")
        rows = np.flatnonzero(self.origin[:, 0] == index)
        return {
            int(self.origin[i, 1]): (
                self.input_ids[self.offsets[i] : self.offsets[i + 1]],
                self.loss_mask[self.offsets[i] : self.offsets[i + 1]],
            )
            for i in rows
        }

    def rejects_of(self, corpus: str) -> dict[int, dict[str, Any]]:
        """{line: reject record} of one input corpus ("file" may be the path as given, or its name)."""
        name = f"{corpus}.jsonl.gz"
        return {int(r["line"]): r for r in self.rejects if Path(str(r["file"])).name == name}


def run_prep(inputs: list[Path], tokenizer: Path, out: Path, **options: Any) -> Prepared:
    import fastsft

    summary = fastsft.prep([str(p) for p in inputs], str(tokenizer), str(out), **options)
    rejects_path = out / "rejects.jsonl"
    rejects = [json.loads(line) for line in rejects_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return Prepared(
        out=out,
        inputs=list(inputs),
        summary=summary,
        input_ids=np.load(out / "input_ids.npy", mmap_mode="r"),
        loss_mask=np.load(out / "loss_mask.npy", mmap_mode="r"),
        offsets=np.load(out / "offsets.npy", mmap_mode="r"),
        origin=np.load(out / "origin.npy", mmap_mode="r"),
        manifest=json.loads((out / "manifest.json").read_text(encoding="utf-8")),
        rejects=rejects,
    )


@pytest.fixture(scope="session")
def qwen_dir() -> Path:
    return QWEN


@pytest.fixture(scope="session")
def qwen_tokenizer():
    from reference import load_tokenizer

    return load_tokenizer(QWEN)


@pytest.fixture(scope="session")
def generation_template() -> str:
    """The Qwen2.5 template with `{% generation %}` blocks (tests/templates/qwen2.5_generation.jinja)."""
    return marked_template()


@pytest.fixture(scope="session")
def marked_qwen_dir(tmp_path_factory, generation_template) -> Path:
    """A copy of the Qwen2.5 tokenizer directory whose chat_template is the `{% generation %}` one."""
    directory = tmp_path_factory.mktemp("qwen2.5_generation")
    for f in QWEN.iterdir():
        shutil.copy(f, directory / f.name)
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["chat_template"] = generation_template
    config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    return directory


@pytest.fixture(scope="session")
def corpus_paths() -> list[Path]:
    return [CORPORA / f"{name}.jsonl.gz" for name in PARITY_CORPORA]


@pytest.fixture(scope="session")
def prepared_qwen(tmp_path_factory, corpus_paths) -> Prepared:
    """All parity corpora through `fastsft.prep` with Qwen2.5's own template, in one run."""
    return run_prep(corpus_paths, QWEN, tmp_path_factory.mktemp("prep") / "qwen")


@pytest.fixture(scope="session")
def prepared_marked(tmp_path_factory, corpus_paths, marked_qwen_dir) -> Prepared:
    """All parity corpora through `fastsft.prep` with the `{% generation %}`-marked template."""
    return run_prep(corpus_paths, marked_qwen_dir, tmp_path_factory.mktemp("prep") / "marked")


@dataclass
class Expected:
    """The reference's verdict on one corpus: a Conversation or a Reject per line."""

    records: dict[int, str]
    conversations: dict[int, Conversation] = field(default_factory=dict)
    rejects: dict[int, Reject] = field(default_factory=dict)


@pytest.fixture(scope="session")
def expected() -> dict[str, Expected]:
    """{corpus: Expected}, computed by tests/reference.py alone (no fastsft)."""
    result = {}
    for name in PARITY_CORPORA:
        exp = Expected(read_records(CORPORA / f"{name}.jsonl.gz"))
        for line, text in exp.records.items():
            try:
                exp.conversations[line] = to_conversation(text)
            except Reject as r:
                exp.rejects[line] = r
        result[name] = exp
    return result
