"""How ``fastsft verify`` reports: the first difference of a sample shown side by side, decoded,
and the summary of a run."""

from __future__ import annotations

from typing import Any

from .wording import plural

SHOW_DIFFERENCES = 5


def _pieces(tokenizer, ids: list[int], lo: int, hi: int) -> list[str]:
    """The text of each token in ids[lo:hi], decoded in context (SentencePiece decoders drop a
    leading space at the start of a decode, and byte-level tokens may split a character)."""
    warm = max(0, lo - 4)
    previous, pieces = tokenizer.decode(ids[warm:lo], skip_special_tokens=False), []
    for k in range(lo, hi):
        text = tokenizer.decode(ids[warm : k + 1], skip_special_tokens=False)
        pieces.append(
            text[len(previous) :] if text.startswith(previous) else tokenizer.decode([ids[k]], skip_special_tokens=False)
        )
        previous = text
    return pieces


def _show(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def _marked(pieces: list[str], mask: list[int]) -> str:
    out, inside = [], False
    for piece, m in zip(pieces, mask):
        if m != inside:
            out.append("[[" if m else "]]")
            inside = bool(m)
        out.append(_show(piece))
    return "".join(out) + ("]]" if inside else "")


def describe_difference(tokenizer, stored: tuple[list, list], reference: tuple[list, list]) -> tuple[str, int, str]:
    """(kind, first differing position, side-by-side text around it)."""
    (s_ids, s_mask), (r_ids, r_mask) = stored, reference
    kind, at = "ids", next((k for k, (x, y) in enumerate(zip(s_ids, r_ids)) if x != y), None)
    if at is None and len(s_ids) != len(r_ids):
        at = min(len(s_ids), len(r_ids))
    if at is None:
        kind, at = "mask", next(k for k, (x, y) in enumerate(zip(s_mask, r_mask)) if x != y)
    lines = []
    sides = {"stored": (s_ids, s_mask), "reference": (r_ids, r_mask)}
    pieces = {}
    for name, (ids, mask) in sides.items():
        lo, hi = max(0, at - 12), min(len(ids), at + 12)
        pieces[name] = _pieces(tokenizer, ids, max(0, at - 3), min(len(ids), at + 4))
        text = _marked(_pieces(tokenizer, ids, lo, hi), mask[lo:hi])
        lines.append(f"    {name:<10}{'…' if lo else ''}{text}{'…' if hi < len(ids) else ''}")
    lines.append(f"    {'pos':>7}  {'stored':<32}{'reference':<32}")
    for k in range(max(0, at - 3), at + 4):
        cells = []
        for name, (ids, mask) in sides.items():
            if k < len(ids):
                piece = repr(pieces[name][k - max(0, at - 3)])[:20]
                cells.append(f"{ids[k]:>7} {'[[' + piece + ']]' if mask[k] else piece:<24}")
            else:
                cells.append(f"{'-':>7} {'':<24}")
        lines.append(f"  {'>' if k == at else ' '} {k:>6}  {cells[0]}{cells[1]}")
        if k >= max(len(s_ids), len(r_ids)) - 1:
            break
    return kind, at, "\n".join(lines)


def format_report(result: dict[str, Any], show: int = SHOW_DIFFERENCES) -> str:
    import tokenizers
    import transformers

    engine = f"transformers {transformers.__version__} + tokenizers {tokenizers.__version__}"
    lines = [
        f"fastsft verify: {result['path']}: {result['sampled']:,} of {plural(result['num_samples'], 'sample')} re-encoded with {engine}"
    ]
    lines += [f"  warning: {w}" for w in dict.fromkeys(result["warnings"])]
    lines += [f"  {name:<10}{result[name]:>8,}" for name in ("checked", "identical", "different")]
    for name, label in (("ids_only", "ids only"), ("skipped", "skipped")):
        counts = result[name]
        if counts or name == "skipped":
            lines.append(f"  {label:<10}{sum(counts.values()):>8,}" + "".join(f"\n    {n:>6,}  {r}" for r, n in counts.items()))
    for d in result["differences"][:show]:
        where = f"sample {d['sample']} ({d['input']}:{d['line']})"
        if d["kind"] == "reference rejects":
            lines.append(f"\n  {where}: stored ({d['stored_len']} tokens) but the reference does not produce it:")
        else:
            lines.append(f"\n  {where}: {'token ids differ' if d['kind'] == 'ids' else 'the mask differs'} at position {d['position']} "
                         f"(stored {d['stored_len']} tokens, reference {d['reference_len']}); [[...]] = trained")  # fmt: skip
        lines.append(d["detail"])
    if len(result["differences"]) > show:
        lines.append(f"\n  ... and {plural(len(result['differences']) - show, 'more different sample')}")
    if result["different"]:
        differ = "differs" if result["different"] == 1 else "differ"
        lines.append(
            f"DIFFERENT: {result['different']} of {plural(result['checked'], 'checked sample')} {differ} from the reference"
        )
    elif result["checked"] == 1:
        lines.append("OK: the 1 checked sample is identical")
    elif result["checked"]:
        lines.append(f"OK: all {plural(result['checked'], 'checked sample')} are identical")
    return "\n".join(lines)


__all__ = ["SHOW_DIFFERENCES", "describe_difference", "format_report"]
