"""`fastsft inspect` and `fastsft stats` (python/fastsft/view.py).

Golden: a hand-written corpus through the built-in chatml template, whose plain view (with `[[...]]`
around trained runs) is checked character for character. Stats: every number against numpy on
the arrays. Files: the PNG is read back by matplotlib; the HTML is parsed and its highlighted spans
compared with the trained runs decoded straight from the mask.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shutil
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from tokenizers import Tokenizer

import fastsft
from fastsft import view, view_stats
from reference import CORPORA, TOKENIZERS

QWEN = TOKENIZERS / "qwen2.5"

# Hand-checked in tests/test_parity_transformers.py (GOLDEN): 52 and 23 tokens, 11 and 3 trained.
GOLDEN_RECORDS = [
    {"messages": [
        {"role": "user", "content": "請翻譯:今天天氣真好"},
        {"role": "assistant", "content": "The weather is nice today."},
        {"role": "user", "content": "Thanks!"},
        {"role": "assistant", "content": "不客气。"},
    ]},
    # The reply's "\n\n" merges with the header's "\n" into one trained token "\n\n\n".
    {"instruction": "hi", "input": "", "output": "\n\nHello"},
    # Markup and a terminal escape in the data: escaped in HTML, made visible in the terminal.
    {"messages": [
        {"role": "user", "content": "Is 1 < 2 & \x1b[31mred\x1b[0m?"},
        {"role": "assistant", "content": '<b>Yes</b> & "true"'},
    ]},
]  # fmt: skip
SYSTEM_TEXT = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


def cli(*argv: str) -> int:
    """Run a subcommand through `register_cli`, as `fastsft` does once cli.py calls it."""
    parser = argparse.ArgumentParser(prog="fastsft")
    view.register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def golden(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("view_golden")
    src = write_jsonl(d / "golden.jsonl", GOLDEN_RECORDS)
    summary = fastsft.prep([str(src)], str(QWEN), str(d / "out"), template="chatml")
    assert summary["written"] == 3
    return d / "out"


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Path:
    """Two real corpora (English tool calls, Chinese), cut at 512 tokens so some are truncated."""
    out = tmp_path_factory.mktemp("view_demo") / "out"
    inputs = [
        CORPORA / "llamafactory_glaive_toolcall_en_demo.jsonl.gz",
        CORPORA / "llamafactory_glaive_toolcall_zh_demo.jsonl.gz",
    ]
    summary = fastsft.prep([str(p) for p in inputs], str(QWEN), str(out), max_len=512)
    assert summary["truncated"] > 0 and summary["rejected"] > 0
    return out


def arrays(out: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.load(out / f) for f in ("input_ids.npy", "loss_mask.npy", "offsets.npy"))


def trained_runs(tok: Tokenizer, ids: np.ndarray, mask: np.ndarray) -> list[str]:
    """The decoded trained runs, found from the mask alone."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [tok.decode(ids[a:b].tolist(), skip_special_tokens=False) for a, b in zip(edges[::2], edges[1::2])]


# -- inspect ------------------------------------------------------------------------------------------


def test_inspect_golden_plain(golden, capsys):
    src = golden.parent / "golden.jsonl"
    assert cli("inspect", str(golden), "--index", "0") == 0
    assert capsys.readouterr().out == (
        f"sample 0 of 3 | {src} line 1 | 52 tokens, 11 trained (21.2%)\n"
        + SYSTEM_TEXT
        + "<|im_start|>user\n請翻譯:今天天氣真好<|im_end|>\n"
        "<|im_start|>assistant\n[[The weather is nice today.<|im_end|>]]\n"
        "<|im_start|>user\nThanks!<|im_end|>\n"
        "<|im_start|>assistant\n[[不客气。<|im_end|>]]\n"
    )
    assert cli("inspect", str(golden), "--index", "1") == 0
    assert capsys.readouterr().out == (
        f"sample 1 of 3 | {src} line 2 | 23 tokens, 3 trained (13.0%)\n"
        + SYSTEM_TEXT
        + "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant[[\n\n\nHello<|im_end|>]]\n"
    )


def test_inspect_golden_ids(golden, capsys):
    assert cli("inspect", str(golden), "--index", "1", "--ids") == 0
    body = capsys.readouterr().out.split("\n", 1)[1]
    # One 'text':id per token; a line break follows each token that holds one.
    assert body == (
        "'<|im_start|>':151644 'system':8948 '\\n':198\n"
        "'You':2610 ' are':525 ' a':264 ' helpful':10950 ' assistant':17847 '.':13 '<|im_end|>':151645 '\\n':198\n"
        "'<|im_start|>':151644 'user':872 '\\n':198\n"
        "'hi':6023 '<|im_end|>':151645 '\\n':198\n"
        "'<|im_start|>':151644 'assistant':77091 [['\\n\\n\\n':1406\n"
        "'Hello':9707 '<|im_end|>':151645]] '\\n':198\n"
    )
    # 譯 is two byte-level tokens: each shows its raw token string, not a replacement character.
    assert cli("inspect", str(golden), "--index", "0", "--ids") == 0
    assert "'翻':100712 'èŃ':91048 '¯':107 ':':25" in capsys.readouterr().out


def test_inspect_escapes_control_characters_and_colours(golden):
    ds = view.open_dataset(golden)
    tok, warnings = view.load_tokenizer(ds)
    assert warnings == []
    sample = view.load_sample(ds, 2)
    plain = view.format_sample(tok, sample, len(ds))
    assert "Is 1 < 2 & \\x1b[31mred\\x1b[0m?" in plain and "\x1b" not in plain
    coloured = view.format_sample(tok, sample, len(ds), color=True)
    assert '\x1b[32m<b>Yes</b> & "true"<|im_end|>\x1b[0m' in coloured
    # Colour replaces the markers and nothing else.
    assert re.sub(r"\x1b\[(32|0)m", "", coloured) == plain.replace("[[", "").replace("]]", "")


def test_inspect_random_is_reproducible_and_in_range(demo, capsys):
    n = len(np.load(demo / "offsets.npy")) - 1
    assert cli("inspect", str(demo), "--random", "4", "--seed", "7") == 0
    first = capsys.readouterr().out
    assert cli("inspect", str(demo), "--random", "4", "--seed", "7") == 0
    assert capsys.readouterr().out == first
    shown = [int(m.replace(",", "")) for m in re.findall(r"^sample ([\d,]+) of ", first, re.MULTILINE)]
    assert len(set(shown)) == 4 and all(0 <= i < n for i in shown)


def test_inspect_origin_points_at_the_input_line(demo):
    """The origin shown is the record's file and line: the record's reply is in the sample."""
    import gzip

    ds = view.open_dataset(demo)
    tok, _ = view.load_tokenizer(ds)
    for index in (0, len(ds) - 1):
        s = view.load_sample(ds, index)
        with gzip.open(s.source, "rt", encoding="utf-8") as f:
            line = f.read().splitlines()[s.line - 1]
        record = json.loads(line)
        first_reply = next(m["value"] for m in record["conversations"] if m["from"] == "gpt")
        assert first_reply[:40] in view.format_sample(tok, s, len(ds))


class _Pres(HTMLParser):
    """Per <pre>: all its text, the text of each span.trained in it, and the tokens' data-id values.

    Also checks that every element is closed in order (the page is well-formed)."""

    VOID: ClassVar[set[str]] = {"meta", "br", "link"}

    def __init__(self):
        super().__init__()
        self.pres: list[dict] = []
        self.stack: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in self.VOID:
            return
        if tag == "pre":
            self.pres.append({"text": "", "trained": [], "ids": []})
        elif tag == "span" and self._inside("pre"):
            if a.get("class") == "trained":
                self.pres[-1]["trained"].append("")
            elif a.get("class") == "tok":
                self.pres[-1]["ids"].append(int(a["data-id"]))
        self.stack.append((tag, a.get("class") or ""))

    def handle_endtag(self, tag):
        assert self.stack.pop()[0] == tag

    def handle_data(self, data):
        if self._inside("pre"):
            self.pres[-1]["text"] += data
            if ("span", "trained") in self.stack:
                self.pres[-1]["trained"][-1] += data

    def _inside(self, tag: str) -> bool:
        return any(t == tag for t, _ in self.stack)


def _parse(page: str) -> list[dict]:
    parser = _Pres()
    parser.feed(page)
    parser.close()
    assert parser.stack == []
    return parser.pres


@pytest.mark.parametrize("dataset", ["golden", "demo"])
def test_html_spans_are_the_trained_runs(dataset, request, tmp_path, capsys):
    out = request.getfixturevalue(dataset)
    ids, mask, offsets = arrays(out)
    tok = Tokenizer.from_file(str(QWEN / "tokenizer.json"))
    n = len(offsets) - 1
    indices = list(range(n)) if n <= 3 else [0, 1, n // 2, n - 1]
    page_path = tmp_path / "view.html"
    pres = []
    for i in indices:
        assert cli("inspect", str(out), "--index", str(i), "--html", str(page_path)) == 0
        page = page_path.read_text(encoding="utf-8")
        assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
        pres += _parse(page)
    assert len(pres) == len(indices)
    for i, pre in zip(indices, pres):
        a, b = offsets[i], offsets[i + 1]
        assert pre["trained"] == trained_runs(tok, ids[a:b], mask[a:b]), f"sample {i}"
        assert pre["text"] == tok.decode(ids[a:b].tolist(), skip_special_tokens=False).replace("\x1b", "\\x1b")
    if dataset == "golden":  # markup in the data came through as text
        assert pres[2]["trained"] == ['<b>Yes</b> & "true"<|im_end|>']
    assert "wrote" in capsys.readouterr().out


def test_html_ids(golden, tmp_path):
    page_path = tmp_path / "ids.html"
    assert cli("inspect", str(golden), "--random", "3", "--seed", "0", "--ids", "--html", str(page_path)) == 0
    pres = _parse(page_path.read_text(encoding="utf-8"))
    ids, _, offsets = arrays(golden)
    assert [p["ids"] for p in pres] == [ids[offsets[i] : offsets[i + 1]].tolist() for i in range(3)]
    assert pres[1]["trained"] == ["\n\n\nHello<|im_end|>"]


# -- decoding runs -----------------------------------------------------------------------------------


def test_decode_runs_keeps_split_characters_whole():
    tok = Tokenizer.from_file(str(QWEN / "tokenizer.json"))
    ids = np.array(tok.encode("請翻譯", add_special_tokens=False).ids)
    assert ids.tolist() == [100792, 100712, 91048, 107]  # 譯 = two tokens
    assert view.decode_runs(tok, ids, np.array([0, 0, 1, 1])) == [("請翻", False), ("譯", True)]
    # A boundary inside 譯 moves to its end: the character is shown with the earlier run.
    assert view.decode_runs(tok, ids, np.array([0, 1, 1, 0])) == [("請", False), ("翻譯", True)]
    assert view.decode_runs(tok, ids, np.array([0, 0, 0, 1])) == [("請翻譯", False)]


def test_decode_runs_keeps_metaspace_leading_space():
    """Mistral's decoder drops the space of a decode's first token; a run must not lose it."""
    tok = Tokenizer.from_file(str(TOKENIZERS / "mistral-7b-instruct-v0.1" / "tokenizer.json"))
    ids = np.array(tok.encode("[INST] Hi [/INST] Hello", add_special_tokens=False).ids)
    mask = np.array([0] * (len(ids) - 1) + [1])
    assert view.decode_runs(tok, ids, mask) == [("[INST] Hi [/INST]", False), (" Hello", True)]


@pytest.mark.parametrize("name", ["qwen2.5", "llama3.1", "mistral-7b-instruct-v0.1", "tinyllama-chat", "gemma", "gpt2"])
def test_decode_runs_concatenate_to_the_decode(name):
    """Random masks over text with characters split across tokens (byte-level BPE, byte fallback):
    the runs always concatenate to the sample's decode, with no replacement characters."""
    tok = Tokenizer.from_file(str(TOKENIZERS / name / "tokenizer.json"))
    text = "[INST] 請翻譯: 今天天氣真好 🤗 [/INST] The weather is nice today. 不客气。🤗🤗 Ünïcödé"
    ids = np.array(tok.encode(text, add_special_tokens=False).ids)
    full = tok.decode(ids.tolist(), skip_special_tokens=False)
    rng = np.random.default_rng(0)
    for _ in range(50):
        mask = (rng.random(len(ids)) < rng.random()).astype(np.uint8)
        pieces = view.decode_runs(tok, ids, mask)
        assert "".join(t for t, _ in pieces) == full
        assert all("\ufffd" not in t for t, _ in pieces)
        assert all(a != b for (_, a), (_, b) in itertools.pairwise(pieces))  # runs alternate


# -- stats --------------------------------------------------------------------------------------------


def nearest_rank(values: np.ndarray, p: float) -> int:
    """The smallest value that at least p% of values do not exceed."""
    s = np.sort(values)
    return int(s[int(np.ceil(p / 100 * len(s))) - 1])


def test_stats_match_numpy(demo, capsys, monkeypatch):
    ids, mask, offsets = arrays(demo)
    lengths = np.diff(offsets)
    trained = np.array([mask[a:b].sum() for a, b in itertools.pairwise(offsets)])
    manifest = json.loads((demo / "manifest.json").read_text(encoding="utf-8"))
    rejects = [json.loads(x) for x in (demo / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]

    monkeypatch.setattr(view_stats, "STATS_CHUNK_TOKENS", 1000)  # many chunks, samples longer than one
    st = view.compute_stats(demo)
    assert st.lengths.tolist() == lengths.tolist()
    assert st.trained.tolist() == trained.tolist()
    assert st.num_tokens == len(ids) and st.num_trained == int(mask.sum())
    assert st.counts["truncated"] == manifest["counts"]["truncated"] > 0
    assert 0 < st.counts["truncated"] <= int((lengths == 512).sum())
    assert st.counts["rejected_by_reason"] == dict(Counter(r["reason"] for r in rejects))
    assert st.max_len == 512

    assert cli("stats", str(demo)) == 0
    text = capsys.readouterr().out

    def num(label: str) -> int:
        return int(re.search(rf"^\s+{label}\s+([\d,]+)", text, re.MULTILINE).group(1).replace(",", ""))

    assert num("samples") == len(lengths)
    assert num("tokens") == len(ids)
    assert num("trained tokens") == int(mask.sum())
    assert f"({mask.sum() / len(ids):.1%} of tokens)" in text
    assert num("truncated") == manifest["counts"]["truncated"]
    assert num("rejected") == len(rejects)
    for label, values in (("tokens", lengths), ("trained", trained)):
        row = re.search(rf"^    {label}\s+([\d, ]+)$", text, re.MULTILINE).group(1).split()
        want = [nearest_rank(values, p) for p in (50, 90, 99)] + [int(values.max())]
        assert [int(x.replace(",", "")) for x in row] == want
        assert want[:3] == np.percentile(values, [50, 90, 99], method="inverted_cdf").astype(int).tolist()
    for reason, k in Counter(r["reason"] for r in rejects).items():
        assert f"{reason} {k:,}" in text
    # default --pack-len: the longest sample (512), and every sample fits
    assert re.search(r"packing at 512, the longest sample .*: ([\d,]+) packs, fill ([\d.]+)%", text)


def test_stats_pack_len_counts_samples_that_do_not_fit(demo, capsys):
    lengths = np.diff(np.load(demo / "offsets.npy"))
    L = 300
    assert cli("stats", str(demo), "--pack-len", str(L)) == 0
    text = capsys.readouterr().out
    over = lengths > L
    packs, fill = re.search(r"packing at 300: ([\d,]+) packs, fill ([\d.]+)%", text).groups()
    packs = int(packs.replace(",", ""))
    fits = int(lengths[~over].sum())
    assert -(-fits // L) <= packs <= int((~over).sum())
    assert float(fill) == pytest.approx(round(100 * fits / (packs * L), 1))
    assert f"{over.sum():,} samples ({lengths[over].sum():,} tokens) are longer than --pack-len 300" in text
    assert "--max-len 300" in text


def test_pack_fill_worked_example():
    p = view.pack_fill(np.array([5, 4, 3, 2, 1, 7]), 6)
    assert (p.packs, p.too_long, p.too_long_tokens) == (3, 1, 7)
    assert p.fill == pytest.approx(15 / 18)
    assert view.pack_fill(np.array([9]), 6).fill is None


def test_stats_of_shards_are_the_sum(tmp_path, demo, golden):
    parent = tmp_path / "shards"
    parent.mkdir()
    shutil.copytree(demo, parent / "shard-00000")
    shutil.copytree(golden, parent / "shard-00001")
    st = view.compute_stats(parent)
    a, b = view.compute_stats(demo), view.compute_stats(golden)
    assert st.lengths.tolist() == a.lengths.tolist() + b.lengths.tolist()
    assert st.trained.tolist() == a.trained.tolist() + b.trained.tolist()
    assert st.counts["read"] == a.counts["read"] + b.counts["read"]
    assert st.max_len is None  # the shards disagree (512 and none)


def test_stats_plot_is_a_png(demo, tmp_path, capsys):
    import matplotlib.image

    png = tmp_path / "lengths.png"
    assert cli("stats", str(demo), "--plot", str(png)) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0.01  # something was drawn
    assert str(png) in capsys.readouterr().out


# -- errors name the flag and the fix ----------------------------------------------------------------


def test_index_out_of_range(golden):
    with pytest.raises(ValueError, match=r"^--index 5000: the dataset has 3 samples \(0\.\.2\)$"):
        cli("inspect", str(golden), "--index", "5000")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["inspect", "{out}", "--seed", "1"], r"--seed 1: only used with --random N"),
        (["inspect", "{out}", "--random", "0"], r"--random 0: give how many samples"),
        (["inspect", "{out}", "--tokenizer", "{tmp}"], r"--tokenizer .*: no tokenizer.json there"),
        (["inspect", "{out}", "--html", "{tmp}/no/such/dir/x.html"], r"--html .*: directory .* does not exist"),
        (["stats", "{out}", "--pack-len", "0"], r"--pack-len 0: must be a positive number"),
        (["stats", "{out}", "--plot", "{tmp}/x.nope"], r"--plot .*x\.nope: unknown image type 'nope'; use a \.png"),
        (["stats", "{tmp}/missing"], r"OUT .*missing: no such dataset directory; .*fastsft prep"),
    ],
)
def test_errors_name_the_flag(golden, tmp_path, argv, message):
    argv = [a.format(out=golden, tmp=tmp_path) for a in argv]
    with pytest.raises((ValueError, OSError), match=message):
        cli(*argv)


def test_index_and_random_exclude_each_other(golden, capsys):
    with pytest.raises(SystemExit):
        cli("inspect", str(golden), "--index", "1", "--random", "2")
    assert "--random: not allowed with argument --index" in capsys.readouterr().err


def test_moved_and_wrong_tokenizers(tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(QWEN, model)
    out = tmp_path / "out"
    fastsft.prep([str(write_jsonl(tmp_path / "one.jsonl", GOLDEN_RECORDS[1:2]))], str(model), str(out), template="chatml")
    shutil.rmtree(model)  # the tokenizer recorded in the manifest is gone
    with pytest.raises(ValueError, match=r"tokenizer .*model/tokenizer.json.* not found.*pass --tokenizer DIR"):
        cli("inspect", str(out))
    assert cli("inspect", str(out), "--tokenizer", str(QWEN)) == 0
    captured = capsys.readouterr()
    assert "[[\n\n\nHello<|im_end|>]]" in captured.out and captured.err == ""
    # Another tokenizer: a warning naming the flag when it can decode the ids, an error when it cannot.
    assert cli("inspect", str(out), "--tokenizer", str(TOKENIZERS / "qwen3")) == 0
    assert re.search(r"--tokenizer .*qwen3: sha256 \w+… differs from the dataset's", capsys.readouterr().err)
    with pytest.raises(ValueError, match=r"--tokenizer .*gpt2 has 50,257 tokens but the data holds id 151,645"):
        cli("inspect", str(out), "--tokenizer", str(TOKENIZERS / "gpt2"))


def test_plot_without_matplotlib_says_how_to_install(golden, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails
    with pytest.raises(ImportError, match=r"^--plot needs matplotlib \(not installed\): pip install 'fastsft\[plot\]'$"):
        cli("stats", str(golden), "--plot", str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()


def test_help_has_worked_examples():
    parser = argparse.ArgumentParser(prog="fastsft")
    sub = parser.add_subparsers(dest="command")
    view.register_cli(sub)
    for name in ("inspect", "stats"):
        help_text = sub.choices[name].format_help()
        assert f"fastsft {name} out/" in help_text and "examples:" in help_text
