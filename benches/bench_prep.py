#!/usr/bin/env python
"""Benchmark `fastsft prep` against the usual ways of making SFT arrays, on one corpus, in one run.

    python benches/bench_prep.py [--conversations 100000] [--corpus repeated|distinct] [--tokenizer assets/tokenizers/qwen2.5]
                                 [--limit METHOD=N ...] [--methods NAME ...] [--work DIR]

`--limit METHOD=N` runs a slow method on about N records, every k-th record of the corpus (so the
mix of corpora stays the same); the table says how many records each method read.

The corpus is the repo's real chat corpora (ShareGPT, Alpaca and tool-call files, mixed in one
JSONL file) repeated until it holds `--conversations` records, or with `--corpus distinct`
`--conversations` records no two alike, built from the translation catalogues the OS ships
(/usr/share/locale: ~1.2M distinct translations in ~180 languages; see build_distinct_corpus). Every method renders with the
tokenizer's own chat template (Qwen2.5's by default) and produces ids (and, where it can, the
assistant mask) of every valid conversation:

  fastsft          `fastsft.prep(...)`, threads 1 and 2.
  tutorial         the pure-Python loop of the original tutorial: render each turn as pieces, one
                   tokenizer call per piece (`tokenizers.Tokenizer.encode`, the fastest Python
                   tokenizer call), mask by piece. Made correct: tokenizing pieces separately is
                   wrong wherever BPE would merge across a piece boundary (a reply starting with
                   "\\n" merges with the header's "\\n"). The fix cuts the rendered text only at the
                   tokenizer's added tokens (<|im_start|>, <|im_end|>, <tool_call>, ...), where
                   `tokenizers` itself cuts the input before normalizing and pre-tokenizing (all of
                   Qwen2.5's added tokens have lstrip/rstrip/normalized off), so ids equal the
                   whole-string tokenization by construction; the mask comes from the offsets of
                   each piece's tokens against the trained character spans. The untimed check
                   after the run counts how many conversations the naive per-piece loop gets wrong.
  transformers     `apply_chat_template(..., return_assistant_tokens_mask=True)` per conversation,
                   one process, with tests/templates/qwen2.5_generation.jinja (Qwen2.5's template
                   with `{% generation %}` blocks; byte-identical text, tested).
  datasets.map     the same call under `datasets.load_dataset("text") .map(num_proc=<cores>)`, as
                   TRL does it.
  encode_batch     raw `tokenizers` `encode_batch` over the pre-rendered texts (chunks of 1,000),
                   threads 1 and 2: the ceiling for anything built on that tokenizer.

The Python methods read each record with tests/reference.py (the parity tests' independent
reference for the record rules) and skip what it rejects. Each method runs in its own subprocess;
peak memory is the sum of PSS over its process tree (sampled every 0.1 s) and the max RSS of one
process (VmHWM, or getrusage for its pool workers). Every method's ids (and masks) are compared
with fastsft's, row by row. The machine's load average is printed: other work on it skews every
number.
"""

from __future__ import annotations

import argparse
import array
import datetime
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import reference  # noqa: E402  (tests/reference.py)

CORPORA = [
    "medicalgpt_sharegpt_zh_1k",
    "llamafactory_alpaca_zh_demo",
    "llamafactory_alpaca_en_demo",
    "llamafactory_glaive_toolcall_en_demo",
    "llamafactory_glaive_toolcall_zh_demo",
    "llamafactory_identity",
    "fastchat_dummy_conversation",
]
CHUNK = 1000  # texts per encode_batch call


# ----------------------------------------------------------------------------------------------
# Workers (each runs in a subprocess: `bench_prep.py --worker NAME ...`)


def sampled(line: int, stride: int) -> bool:
    """Whether a 1-based line is in the every-`stride`-th sample."""
    return (line - 1) % stride == 0


def records(corpus: Path, stride: int):
    """(line, Conversation) of each valid record among every `stride`-th line."""
    for line, text in reference.read_lines(corpus):
        if not sampled(line, stride):
            continue
        try:
            yield line, reference.to_conversation(text)
        except reference.Reject:
            continue


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its waited-for children (pool workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Rows:
    """Collects rows (ids, mask, line) into flat arrays."""

    def __init__(self, with_mask: bool):
        self.ids = array.array("I")
        self.mask = array.array("B") if with_mask else None
        self.offsets = array.array("q", [0])
        self.lines = array.array("q")

    def add(self, line: int, ids, mask=None) -> None:
        self.ids.extend(ids)
        if self.mask is not None:
            self.mask.extend(mask)
        self.offsets.append(len(self.ids))
        self.lines.append(line)

    def save(self, out: Path) -> None:
        np.save(out / "ids.npy", np.frombuffer(self.ids, dtype=np.uint32))
        if self.mask is not None:
            np.save(out / "mask.npy", np.frombuffer(self.mask, dtype=np.uint8))
        np.save(out / "offsets.npy", np.frombuffer(self.offsets, dtype=np.int64))
        np.save(out / "lines.npy", np.frombuffer(self.lines, dtype=np.int64))


def qwen_pieces(conv: reference.Conversation) -> list[tuple[str, bool]]:
    """Qwen2.5's chat template as the tutorial writes it: (piece, trained) in order.

    A trained piece is an assistant reply through its <|im_end|> (DESIGN §3)."""
    messages, tools = conv.messages, conv.tools
    pieces: list[tuple[str, bool]] = []
    first_system = messages[0]["role"] == "system"
    system = messages[0]["content"] if first_system else "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    if tools:
        pieces.append(
            (
                "<|im_start|>system\n"
                + system
                + "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
                + "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools)
                + "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
                '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
                "<args-json-object>}\n</tool_call><|im_end|>\n",
                False,
            )
        )
    else:
        pieces.append(("<|im_start|>system\n" + system + "<|im_end|>\n", False))
    last = len(messages) - 1
    for i, m in enumerate(messages):
        role, content = m["role"], m["content"]
        if role == "user" or (role == "system" and i > 0):
            pieces.append((f"<|im_start|>{role}\n{content}<|im_end|>\n", False))
        elif role == "assistant":
            body = content
            for j, call in enumerate(m.get("tool_calls") or []):
                f = call.get("function", call)
                if content or j > 0:
                    body += "\n"
                body += (
                    '<tool_call>\n{"name": "'
                    + f["name"]
                    + '", "arguments": '
                    + json.dumps(f["arguments"], ensure_ascii=False)
                    + "}\n</tool_call>"
                )
            pieces += [("<|im_start|>assistant\n", False), (body + "<|im_end|>", True), ("\n", False)]
        elif role == "tool":
            if i == 0 or messages[i - 1]["role"] != "tool":
                pieces.append(("<|im_start|>user", False))
            pieces.append(("\n<tool_response>\n" + content + "\n</tool_response>", False))
            if i == last or messages[i + 1]["role"] != "tool":
                pieces.append(("<|im_end|>\n", False))
    return pieces


def worker_tutorial(args, out: Path) -> dict:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(args.tokenizer) / "tokenizer.json"))
    added = {t.content: i for i, t in tok.get_added_tokens_decoder().items()}
    assert all(not (t.lstrip or t.rstrip or t.normalized) for t in tok.get_added_tokens_decoder().values())
    cut = re.compile("(" + "|".join(re.escape(a) for a in sorted(added, key=len, reverse=True)) + ")")
    rows = Rows(with_mask=True)
    start, cpu0 = time.perf_counter(), cpu_seconds()
    for line, conv in records(Path(args.corpus_file), args.stride):
        pieces = qwen_pieces(conv)
        spans, pos = [], 0  # trained character spans of the whole text
        for text, trained in pieces:
            if trained:
                spans.append((pos, pos + len(text)))
            pos += len(text)
        text = "".join(t for t, _ in pieces)
        ids, mask, base, k = [], [], 0, 0
        for piece in cut.split(text):
            if not piece:
                continue
            if piece in added:
                offsets, piece_ids = [(0, len(piece))], [added[piece]]
            else:
                enc = tok.encode(piece, add_special_tokens=False)
                offsets, piece_ids = enc.offsets, enc.ids
            ids += piece_ids
            for s, e in offsets:  # a token is trained iff it overlaps a trained span
                while k < len(spans) and base + s >= spans[k][1]:
                    k += 1
                mask.append(int(k < len(spans) and base + e > spans[k][0]))
            base += len(piece)
        rows.add(line, ids, mask)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    rows.save(out)
    # Untimed: how often the naive loop (one call per template piece) is wrong.
    naive_wrong, index = 0, 0
    for _line, conv in records(Path(args.corpus_file), args.stride):
        naive = [i for text, _ in qwen_pieces(conv) for i in tok.encode(text, add_special_tokens=False).ids]
        if naive != rows.ids[rows.offsets[index] : rows.offsets[index + 1]].tolist():
            naive_wrong += 1
        index += 1
    return {"seconds": seconds, "cpu": cpu, "conversations": len(rows.lines), "tokens": len(rows.ids), "naive_wrong": naive_wrong}


def worker_transformers(args, out: Path) -> dict:
    tok = reference.load_tokenizer(args.tokenizer)
    template = reference.marked_template()
    rows = Rows(with_mask=True)
    start, cpu0 = time.perf_counter(), cpu_seconds()
    for line, conv in records(Path(args.corpus_file), args.stride):
        enc = tok.apply_chat_template(
            conv.messages,
            tools=conv.tools or None,
            chat_template=template,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        rows.add(line, enc["input_ids"], enc["assistant_masks"])
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    rows.save(out)
    return {"seconds": seconds, "cpu": cpu, "conversations": len(rows.lines), "tokens": len(rows.ids)}


_TOKENIZER = None


def _map_one(example, index, tokenizer_dir, stride):
    """datasets.map function: raw line -> input_ids, assistant_masks (empty when rejected)."""
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = (reference.load_tokenizer(tokenizer_dir), reference.marked_template())
    tok, template = _TOKENIZER
    try:
        conv = reference.to_conversation(example["text"])
    except reference.Reject:
        return {"input_ids": [], "assistant_masks": [], "line": index * stride + 1, "ok": False}
    enc = tok.apply_chat_template(
        conv.messages,
        tools=conv.tools or None,
        chat_template=template,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    return {"input_ids": enc["input_ids"], "assistant_masks": enc["assistant_masks"], "line": index * stride + 1, "ok": True}


def worker_datasets(args, out: Path) -> dict:
    import datasets

    datasets.disable_progress_bars()
    cache = out / "hf_cache"
    start, cpu0 = time.perf_counter(), cpu_seconds()
    ds = datasets.load_dataset("text", data_files=str(args.corpus_file), split="train", cache_dir=str(cache))
    if args.stride > 1:
        ds = ds.select(range(0, len(ds), args.stride))
    ds = ds.map(
        _map_one,
        with_indices=True,
        fn_kwargs={"tokenizer_dir": args.tokenizer, "stride": args.stride},
        num_proc=args.threads,
        remove_columns=["text"],
    )
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    rows = Rows(with_mask=True)
    for batch in ds.iter(batch_size=10_000):
        for ok, line, ids, mask in zip(batch["ok"], batch["line"], batch["input_ids"], batch["assistant_masks"]):
            if ok:
                rows.add(line, ids, mask)
    rows.save(out)
    shutil.rmtree(cache, ignore_errors=True)
    return {"seconds": seconds, "cpu": cpu, "conversations": len(rows.lines), "tokens": len(rows.ids)}


def worker_encode_batch(args, out: Path) -> dict:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(args.tokenizer) / "tokenizer.json"))
    data = json.loads(Path(args.texts).read_text(encoding="utf-8"))
    lines, texts = data["lines"], data["texts"]
    if args.stride > 1:
        keep = [i for i, x in enumerate(lines) if sampled(x, args.stride)]
        lines, texts = [lines[i] for i in keep], [texts[i] for i in keep]
    rows = Rows(with_mask=False)
    start, cpu0 = time.perf_counter(), cpu_seconds()
    for i in range(0, len(texts), CHUNK):
        for line, enc in zip(lines[i : i + CHUNK], tok.encode_batch(texts[i : i + CHUNK], add_special_tokens=False)):
            rows.add(line, enc.ids)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    rows.save(out)
    return {"seconds": seconds, "cpu": cpu, "conversations": len(rows.lines), "tokens": len(rows.ids)}


def worker_fastsft(args, out: Path) -> dict:
    import fastsft

    start, cpu0 = time.perf_counter(), cpu_seconds()
    summary = fastsft.prep([str(args.corpus_file)], str(args.tokenizer), str(out / "prep"), threads=args.threads)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    return {"seconds": seconds, "cpu": cpu, "conversations": summary["written"], "tokens": summary["tokens"], "summary": summary}


WORKERS = {
    "fastsft": worker_fastsft,
    "tutorial": worker_tutorial,
    "transformers": worker_transformers,
    "datasets": worker_datasets,
    "encode_batch": worker_encode_batch,
}


# ----------------------------------------------------------------------------------------------
# The driver


def build_corpus(path: Path, n: int) -> None:
    """The real chat corpora, concatenated and repeated until `n` records."""
    lines = [text.rstrip("\n") for name in CORPORA for _, text in reference.read_lines(reference.CORPORA / f"{name}.jsonl.gz")]
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
        for i in range(n):
            f.write(lines[i % len(lines)] + "\n")


LOCALE = Path("/usr/share/locale")
PAIRS_PER_TURN, TURNS = 5, 2


def translation_pairs() -> dict[str, list[tuple[str, str]]]:
    """language -> (English source, translation) of every gettext catalogue under /usr/share/locale
    (the translations of GTK, GLib, coreutils, ISO code lists, ... that the OS ships: real text
    in ~180 languages), each translation once over all catalogues."""
    import gettext

    by_language: dict[str, list[tuple[str, str]]] = {}
    seen: set[str] = set()
    for mo in sorted(LOCALE.glob("*/LC_MESSAGES/*.mo")):
        try:
            with open(mo, "rb") as f:
                catalogue = gettext.GNUTranslations(f)._catalog
        except (OSError, UnicodeDecodeError, ValueError, IndexError, LookupError, SyntaxError):
            continue  # a catalogue gettext cannot read is simply not used
        language = mo.parts[-3]
        for source, translation in catalogue.items():
            source = source[0] if isinstance(source, tuple) else source
            if source and translation and translation != source and translation not in seen:
                seen.add(translation)
                by_language.setdefault(language, []).append((source, translation))
    return by_language


def build_distinct_corpus(path: Path, n: int) -> str:
    """`n` ShareGPT records, no two alike: each is TURNS exchanges of "Translate into <language>:"
    with PAIRS_PER_TURN English interface strings, answered with their translations, taken in
    turn from each language's catalogue strings (every translation used at most once). Built
    here from the machine's own files, never committed. Returns a description for the report."""
    by_language = translation_pairs()
    total = sum(len(v) for v in by_language.values())
    need = n * PAIRS_PER_TURN * TURNS
    if total < need:
        raise SystemExit(f"{LOCALE} holds {total:,} distinct translations; {n:,} records need {need:,}: ask for fewer")
    queues = {language: iter(pairs) for language, pairs in by_language.items()}
    languages, used, chars = sorted(queues), set(), 0
    with open(path, "w", encoding="utf-8") as f:
        written, turn = 0, 0
        while written < n:
            if not languages:
                raise SystemExit(f"{LOCALE} ran out of translations after {written:,} records: ask for fewer")
            language = languages[turn % len(languages)]
            turn += 1
            exchanges = []
            for _ in range(TURNS):
                pairs = [p for p in (next(queues[language], None) for _ in range(PAIRS_PER_TURN)) if p]
                if not pairs:
                    break
                exchanges += [
                    {"from": "human", "value": f"Translate into {language}:\n" + "\n".join(s for s, _ in pairs)},
                    {"from": "gpt", "value": "\n".join(t for _, t in pairs)},
                ]
            if not exchanges:
                languages.remove(language)
                continue
            line = json.dumps({"conversations": exchanges}, ensure_ascii=False)
            chars += len(line)
            used.add(language)
            f.write(line + "\n")
            written += 1
    return (
        f"distinct: {total:,} translations from {LOCALE}/*/LC_MESSAGES/*.mo, {len(used)} languages used, "
        f"{chars / 1e6:.1f}M characters of JSON"
    )


def prerender(corpus: Path, tokenizer: str, path: Path) -> None:
    """The rendered text of each valid conversation (input of the raw encode_batch ceiling)."""
    tok = reference.load_tokenizer(tokenizer)
    cache: dict[str, str] = {}  # the corpus repeats: render each distinct record once
    lines, texts = [], []
    for line, text in reference.read_lines(corpus):
        if text not in cache:
            try:
                cache[text] = reference.render(tok, reference.to_conversation(text))
            except reference.Reject:
                cache[text] = None
        if cache[text] is not None:
            lines.append(line)
            texts.append(cache[text])
    path.write_text(json.dumps({"lines": lines, "texts": texts}, ensure_ascii=False), encoding="utf-8")


def peak_rss_kb() -> int:
    """Peak RSS of this process (VmHWM: reset by exec, unlike getrusage's ru_maxrss, which a
    subprocess inherits from the fork of its parent) or of its largest waited-for child."""
    with open("/proc/self/status") as f:
        hwm = next(int(row.split()[1]) for row in f if row.startswith("VmHWM:"))
    return max(hwm, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def tree_pss_kb(root: int) -> int:
    """Sum of PSS (kB) over a process and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for row in f:
                    if row.startswith("Pss:"):
                        total += int(row.split()[1])
                        break
        except OSError:
            pass
    return total


def run_method(name: str, method: str, threads: int, stride: int, common: list[str], out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="true" if threads > 1 else "false")
    cmd = [sys.executable, __file__, "--worker", method, "--threads", str(threads), "--out", str(out), *common]
    cmd += ["--stride", str(stride)]
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    load = os.getloadavg()[0]
    proc = subprocess.Popen(cmd, env=env)
    peak, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], tree_pss_kb(proc.pid))
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    done.set()
    sampler.join()
    if code != 0:
        raise SystemExit(f"{name} failed (exit {code})")
    result = json.loads((out / "result.json").read_text())
    result.update(
        name=name,
        method=method,
        threads=threads,
        stride=stride,
        peak_pss_mb=peak[0] / 1024,
        max_rss_mb=result["max_rss_kb"] / 1024,
        load=f"{load:.1f} / {os.getloadavg()[0]:.1f}",
    )
    print(f"[bench] {name}: {result['conversations'] / result['seconds']:,.0f} conversations/s", file=sys.stderr, flush=True)
    return result


def load_rows(result: dict, out: Path):
    if result["method"] == "fastsft":
        p = out / "prep"
        origin = np.load(p / "origin.npy")
        return (np.load(p / "input_ids.npy"), np.load(p / "loss_mask.npy"), np.load(p / "offsets.npy"), origin[:, 1])
    mask = np.load(out / "mask.npy") if (out / "mask.npy").exists() else None
    return np.load(out / "ids.npy"), mask, np.load(out / "offsets.npy"), np.load(out / "lines.npy")


def agreement(ref, rows, stride: int) -> str:
    """Compare a method's rows with fastsft's, matched by source line. Returns a short verdict."""
    r_ids, r_mask, r_off, r_lines = ref
    ids, mask, off, lines = rows
    want_lines = r_lines[(r_lines - 1) % stride == 0]
    if not np.array_equal(lines, want_lines):
        return f"other rows: {len(lines)} rows vs fastsft {len(want_lines)}"
    pos = np.searchsorted(r_lines, lines)  # fastsft row of each of the method's rows
    if not np.array_equal(np.diff(off), r_off[pos + 1] - r_off[pos]):
        bad = int(np.sum(np.diff(off) != r_off[pos + 1] - r_off[pos]))
        return f"ids differ on {bad:,}/{len(lines):,} rows (lengths)"
    take = np.concatenate([np.arange(r_off[p], r_off[p + 1]) for p in pos]) if len(pos) else np.zeros(0, np.int64)
    row_of = np.repeat(np.arange(len(lines)), np.diff(off))
    bad_ids = len(np.unique(row_of[ids != r_ids[take]]))
    if bad_ids:
        return f"ids differ on {bad_ids:,}/{len(lines):,} rows"
    if mask is None:
        return "ids equal"
    bad_mask = len(np.unique(row_of[mask != r_mask[take]]))
    return "ids equal, " + (f"masks differ on {bad_mask:,}/{len(lines):,} rows" if bad_mask else "masks equal")


def machine() -> str:
    cpu = next(
        (row.split(":", 1)[1].strip() for row in open("/proc/cpuinfo") if row.startswith("model name")), platform.processor()
    )
    return f"{os.cpu_count()} cores (nproc {len(os.sched_getaffinity(0))}), {cpu}, {platform.system()} {platform.release()}"


def versions() -> str:
    import importlib.metadata as md

    names = ["fastsft", "tokenizers", "transformers", "datasets", "jinja2", "numpy"]
    out = []
    for n in names:
        try:
            out.append(f"{n} {md.version(n)}")
        except md.PackageNotFoundError:
            pass
    return ", ".join(out) + f", Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conversations", type=int, default=100_000, help="records in the benchmark corpus")
    ap.add_argument("--tokenizer", default=str(reference.TOKENIZERS / "qwen2.5"), help="tokenizer directory")
    ap.add_argument("--threads", type=int, nargs="+", default=None, help="thread counts (default: 1 and all cores)")
    ap.add_argument("--methods", nargs="+", default=list(WORKERS), choices=list(WORKERS))
    ap.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="METHOD=N",
        help="run METHOD on the first N records only (stated in the table)",
    )
    ap.add_argument("--work", default=None, help="working directory (default: a fresh temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the working directory")
    # worker mode
    ap.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument(
        "--corpus",
        choices=["repeated", "distinct"],
        default="repeated",
        help="repeated: the repo's chat corpora repeated; distinct: every record different, "
        "built from the translation catalogues under /usr/share/locale (see build_distinct_corpus)",
    )
    ap.add_argument("--corpus-file", help=argparse.SUPPRESS)
    ap.add_argument("--texts", help=argparse.SUPPRESS)
    ap.add_argument("--stride", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        args.threads = args.threads[0]
        out = Path(args.out)
        result = WORKERS[args.worker](args, out)
        result["max_rss_kb"] = peak_rss_kb()
        (out / "result.json").write_text(json.dumps(result))
        return

    cores = len(os.sched_getaffinity(0))
    thread_counts = args.threads or sorted({1, cores})
    limits = {}
    for item in args.limit:
        method, _, n = item.partition("=")
        limits[method] = int(n)
    load_before = os.getloadavg()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_prep_"))
    work.mkdir(parents=True, exist_ok=True)
    corpus, texts = work / "corpus.jsonl", work / "texts.json"
    print(f"[bench] corpus: {args.conversations:,} records -> {corpus}", file=sys.stderr, flush=True)
    if args.corpus == "distinct":
        described = build_distinct_corpus(corpus, args.conversations)
    else:
        build_corpus(corpus, args.conversations)
        described = f"{', '.join(CORPORA)} repeated"
    common = ["--corpus-file", str(corpus), "--tokenizer", args.tokenizer, "--texts", str(texts)]

    plan = []  # (name, method, threads)
    for method in args.methods:
        if method in ("fastsft", "encode_batch"):
            plan += [(f"{method} ({t} thr)", method, t) for t in thread_counts]
        elif method == "datasets":
            plan.append((f"datasets.map (num_proc={cores})", method, cores))
        else:
            plan.append((method, method, 1))
    if "encode_batch" in args.methods:
        print("[bench] pre-rendering texts for encode_batch (untimed)", file=sys.stderr, flush=True)
        prerender(corpus, args.tokenizer, texts)

    results = []
    for name, method, threads in plan:
        out = work / re.sub(r"\W+", "_", name).strip("_")
        stride = -(-args.conversations // limits[method]) if method in limits else 1
        results.append((run_method(name, method, threads, stride, common, out), out))

    ref = next(((r, o) for r, o in results if r["method"] == "fastsft"), None)
    ref_rows = load_rows(*ref) if ref else None
    ceiling = {r["threads"]: r for r, _ in results if r["method"] == "encode_batch"}
    dsmap = next((r for r, _ in results if r["method"] == "datasets"), None)

    def rate(r):
        return r["conversations"] / r["seconds"]

    header = [
        "method",
        "records",
        "conversations/s",
        "tokens/s",
        "CPU s",
        "conversations per CPU s",
        "peak PSS MB (tree)",
        "max RSS MB (1 process)",
        "vs encode_batch (same threads)",
        "vs datasets.map",
        "load before / after",
        "output vs fastsft",
    ]
    table = []
    for r, out in results:
        same = ceiling.get(r["threads"])
        note = ""
        if r.get("naive_wrong") is not None:
            note = f"; naive per-piece loop wrong on {r['naive_wrong']:,}"
        if ref is None:
            verdict = "n/a"
        elif r is ref[0]:
            verdict = "(reference)"
        else:
            verdict = agreement(ref_rows, load_rows(r, out), r["stride"])
        table.append(
            [
                r["name"],
                f"{-(-args.conversations // r['stride']):,}" + (f" (1 in {r['stride']})" if r["stride"] > 1 else ""),
                f"{rate(r):,.0f}",
                f"{r['tokens'] / r['seconds']:,.0f}",
                f"{r['cpu']:,.1f}",
                f"{r['conversations'] / r['cpu']:,.0f}",
                f"{r['peak_pss_mb']:,.0f}",
                f"{r['max_rss_mb']:,.0f}",
                f"{rate(r) / rate(same):.2f}x" if same else "",
                f"{rate(r) / rate(dsmap):.2f}x" if dsmap else "",
                r["load"],
                verdict + note,
            ]
        )
    cmd = " ".join(["python", "benches/bench_prep.py", *sys.argv[1:]])
    print()
    print(f"command: {cmd}")
    print(f"machine: {machine()}")
    print(f"load average (1, 5, 15 min) before: {load_before}, after: {os.getloadavg()}")
    print(f"date:    {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"versions: {versions()}")
    print(f"tokenizer: {args.tokenizer}; corpus: {args.conversations:,} records ({described})")
    if ref:
        s = ref[0]["summary"]
        print(
            f"fastsft summary: read {s['read']:,}, written {s['written']:,}, rejected {s['rejected']:,} "
            f"{s.get('rejected_by_reason')}, tokens {s['tokens']:,}, trained {s['trained_tokens']:,}"
        )
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in table:
        print("| " + " | ".join(row) + " |")
    if not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
