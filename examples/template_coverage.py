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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import fastsft  # noqa: E402
from public_models import build_models  # noqa: E402

CORPORA = sorted((REPO / "assets" / "corpora").glob("*.jsonl.gz"))
Q = {"role": "user", "content": "What is 2+2?"}
TRACES = [
    {"messages": [Q, {"role": "assistant", "content": "4", "reasoning_content": "add two and two"}]},
    {"messages": [Q, {"role": "assistant", "content": "<think>\nadd two and two\n</think>\n\n4"}]},
    {"messages": [Q, {"role": "assistant", "content": "add two and two\n</think>\n\n4"}]},
    {"messages": [Q, {"role": "assistant", "content": "4", "reasoning": "add"}, {"role": "user", "content": "And 3+3?"},
                  {"role": "assistant", "content": "6", "thinking": "add three"}]},
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
                s = fastsft.prep([str(p) for p in inputs], str(directory), str(out), max_reject_fraction=1.0,
                                 date="2024-07-26")
                reasons = ", ".join(f"{k} {v}" for k, v in sorted(s["rejected_by_reason"].items(), key=lambda kv: -kv[1]))
                print(f"{name:16} {label:18} {s['read']:>6} {s['written']:>7} {s['samples']:>7}  {reasons or '-'}")


if __name__ == "__main__":
    main()
