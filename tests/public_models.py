"""Model directories for the public chat templates of `tests/templates/public/` (see its README):
each is a shipped tokenizer of the same vocabulary with the template as its chat template. Used by
`tests/test_reasoning.py` and `examples/template_coverage.py`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOKENIZERS = REPO / "assets" / "tokenizers"
PUBLIC = Path(__file__).resolve().parent / "templates" / "public"

# The DeepSeek-R1-Distill-Qwen tokenizer is Qwen2.5's vocabulary with its own added tokens at the
# ids Qwen2.5 uses for its control tokens.
R1_ADDED = {
    151643: ("<｜end▁of▁sentence｜>", True),
    151644: ("<｜User｜>", True),
    151645: ("<｜Assistant｜>", True),
    151646: ("<｜begin▁of▁sentence｜>", True),
    151647: ("<|EOT|>", True),
    151648: ("<think>", False),
    151649: ("</think>", False),
}


def _model_dir(root: Path, name: str, tokenizer: str, template: str | None, **config) -> Path:
    """A model directory: a shipped tokenizer, its config with `template` as the chat template."""
    directory = root / name
    directory.mkdir()
    shutil.copy(TOKENIZERS / tokenizer / "tokenizer.json", directory / "tokenizer.json")
    cfg = json.loads((TOKENIZERS / tokenizer / "tokenizer_config.json").read_text(encoding="utf-8"))
    if template is not None:
        cfg["chat_template"] = (PUBLIC / template).read_text(encoding="utf-8")
    cfg.update(config)
    (directory / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")
    return directory


def build_models(root: Path) -> dict[str, Path]:
    """Writes the model directories under `root`; returns {name: directory}."""
    dirs = {
        "qwen3": TOKENIZERS / "qwen3",
        "qwq": _model_dir(root, "qwq", "qwen3", "qwq-32b.jinja"),
        "qwen3-thinking": _model_dir(root, "qwen3-thinking", "qwen3", "qwen3-thinking-2507.jinja"),
        "nemo": _model_dir(root, "nemo", "mistral-7b-instruct-v0.3", "mistral-nemo-instruct-2407.jinja"),
        "llama3.2": _model_dir(root, "llama3.2", "llama3.1", "llama-3.2-instruct.jinja"),
        "qwen2.5": TOKENIZERS / "qwen2.5",
    }
    r1 = _model_dir(
        root,
        "r1",
        "qwen2.5",
        "deepseek-r1-distill-qwen.jinja",
        bos_token="<｜begin▁of▁sentence｜>",
        eos_token="<｜end▁of▁sentence｜>",
        pad_token="<｜end▁of▁sentence｜>",
    )
    tok = json.loads((r1 / "tokenizer.json").read_text(encoding="utf-8"))
    for token in tok["added_tokens"]:
        if token["id"] in R1_ADDED:
            token["content"], token["special"] = R1_ADDED[token["id"]]
    (r1 / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    cfg = json.loads((r1 / "tokenizer_config.json").read_text(encoding="utf-8"))
    cfg.pop("added_tokens_decoder", None)
    (r1 / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")
    dirs["r1"] = r1
    return dirs
