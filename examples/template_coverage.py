"""Per public chat template (tests/templates/public/), what `fastsft prep` makes of the shipped
corpora and of hand-written reasoning traces: samples written, rejects by reason.

    python examples/template_coverage.py

The shipped corpora hold no reasoning: templates whose generation prompt opens `<think>` (QwQ,
DeepSeek-R1 distills, Qwen3-Thinking-2507) reject them as `missing_reasoning`, by design.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import fastsft  # noqa: E402
from public_models import build_models  # noqa: E402

# The chat corpora (gsm8k and belle_eval are question/answer files in no chat layout).
CORPORA = [p for p in sorted((REPO / "assets" / "corpora").glob("*.jsonl.gz")) if not p.name.startswith(("gsm8k", "belle"))]
Q = {"role": "user", "content": "What is 2+2?"}
TRACES = [
    {"messages": [Q, {"role": "assistant", "content": "4", "reasoning_content": "add two and two"}]},
    {"messages": [Q, {"role": "assistant", "content": "<think>\nadd two and two\n</think>\n\n4"}]},
    {"messages": [Q, {"role": "assistant", "content": "add two and two\n</think>\n\n4"}]},
    {
        "messages": [
            Q,
            {"role": "assistant", "content": "4", "reasoning": "add"},
            {"role": "user", "content": "And 3+3?"},
            {"role": "assistant", "content": "6", "thinking": "add three"},
        ]
    },
]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        traces = root / "traces.jsonl"
        traces.write_text("".join(json.dumps(t) + "\n" for t in TRACES), encoding="utf-8")
        models = build_models(root)
        print(f"{'template':16} {'input':18} {'read':>6} {'written':>7} {'samples':>7}  rejected by reason")
        for name, directory in models.items():
            for label, inputs in (("shipped corpora", CORPORA), ("reasoning traces", [traces])):
                out = root / f"out-{name}-{label[:4]}"
                try:
                    s = fastsft.prep(
                        [str(p) for p in inputs], str(directory), str(out), max_reject_fraction=1.0, date="2024-07-26"
                    )
                    by_reason = s["rejected_by_reason"]
                    read, written, samples = s["read"], s["written"], s["samples"]
                except fastsft.FastSFTError:  # every record rejected: the run keeps OUT.rejects.jsonl
                    rejects = [json.loads(line) for line in (root / f"{out.name}.rejects.jsonl").read_text().splitlines()]
                    by_reason = Counter(r["reason"] for r in rejects)
                    read, written, samples = len(rejects), 0, 0
                reasons = ", ".join(f"{k} {v}" for k, v in sorted(by_reason.items(), key=lambda kv: -kv[1]))
                print(f"{name:16} {label:18} {read:>6} {written:>7} {samples:>7}  {reasons or '-'}")


if __name__ == "__main__":
    main()
