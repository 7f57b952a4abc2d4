"""One self-contained HTML page from results files: the page's data, built here in Python, and the page's
script and style (``assets/``) inlined beside it, so the file opens from disk with no network.

What goes in, and why in that shape:

* the run summary of every file (``report.build_report``: accuracy with intervals, compute, curves) and
  the ledger totals per strategy;
* one compact row per record (``explain.row``), which the list filters and sorts in the browser;
* each record's detail (question, candidates, why it was chosen, its tree) as its own
  ``<script type="application/json">`` block, parsed only when the problem is opened, so a page of
  10,000 problems does not parse megabytes of candidates and trees before its first screen.

Every string from a results file is model or user text: it is escaped into JSON here (``<``, ``>`` and
``&`` written as ``\\u`` escapes, so no text can close a script block) and the script only ever puts it
into the page as text, never as markup.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from . import explain

ASSETS = Path(__file__).parent / "assets"
#: the first bytes of every page this module writes: an existing file that does not start with them is
#: not ours, and is never overwritten
MARKER = "<!DOCTYPE html>\n<!-- written by tts view -->"


class ViewError(ValueError):
    """A user mistake (a file that is not results, an output path that would destroy something)."""


def _safe_json(value: Any) -> str:
    """JSON that can sit inside a <script> element whatever its strings hold (a non-finite number, which
    a results line may hold and JSON may not, becomes null)."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:
        text = json.dumps(_finite(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") \
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float made None (JSON has no NaN; a hand-made file may hold one)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


#: the numbers of a tree node the page shows (a zero count is left out, a zero score is not)
NODE_NUMBERS = ("score", "path_score", "rank_score", "value", "prior", "visits", "num_tokens", "path_tokens",
                "prompt_tokens", "cached_prompt_tokens")


def _tree(tree: Any) -> dict | None:
    """The trace's tree if it is one the page can draw (nodes with unique integer ids, parents and children
    that are ids of the tree), else None. A results file's ``info`` is free-form: a hand-made or foreign
    one must not break the page."""
    if not isinstance(tree, dict) or not isinstance(tree.get("nodes"), list):
        return None
    nodes = tree["nodes"]
    if not all(isinstance(n, dict) and _int(n.get("id")) for n in nodes):
        return None
    position = {n["id"]: i for i, n in enumerate(nodes)}
    if len(position) != len(nodes):
        return None
    # A parent precedes its children (Tree.to_json exports in creation order), so keeping only such links
    # makes any file's tree a forest: no cycle can send the page's walks round for ever.
    parent_of = {n["id"]: n.get("parent") if _int(n.get("parent")) and position.get(n.get("parent"), i) < i else None
                 for i, n in enumerate(nodes)}
    out = []
    for n in nodes:
        children = n.get("children") if isinstance(n.get("children"), list) else []
        # only what the page draws, and no empty fields: a 500-node tree is most of a record's size
        node = {"id": n["id"], "parent": parent_of[n["id"]],
                "children": list(dict.fromkeys(c for c in children if _int(c) and parent_of.get(c) == n["id"])),
                "step": n.get("step") if isinstance(n.get("step"), str) else "",
                "kind": n.get("kind") if isinstance(n.get("kind"), str) else "step",
                "depth": n["depth"] if _int(n.get("depth")) and 0 <= n["depth"] <= 10_000 else 0,
                "finished": n.get("finished") is True}
        for key in NODE_NUMBERS:
            if _number(n.get(key)) and (n[key] or key in ("score", "path_score", "rank_score")):
                node[key] = n[key]
        if isinstance(n.get("finish_reason"), str):
            node["finish_reason"] = n["finish_reason"]
        if _int(n.get("group")):
            node["group"] = n["group"]
        out.append(node)
    truncated = tree.get("truncated")
    return {"nodes": out, "truncated": truncated if _int(truncated) else 0}


def _clean_info(info: Mapping, candidates: int) -> dict:
    """``info`` with the fields the page reads checked: a field of the wrong shape is left out, the rest
    is shown as it is."""
    info = dict(info)
    if "tree" in info:
        tree = _tree(info.pop("tree"))
        if tree is not None:
            info["tree"] = tree
    checks = {
        "votes": lambda v: isinstance(v, dict) and all(_number(x) for x in v.values()),
        "candidate_nodes": lambda v: isinstance(v, list) and len(v) == candidates and all(_int(x) for x in v),
        "particles": lambda v: isinstance(v, list) and all(isinstance(r, list) and all(_int(x) for x in r) for r in v),
        "segments": lambda v: isinstance(v, list) and all(
            s is None or (isinstance(s, list) and all(isinstance(p, list) and len(p) == 3 and isinstance(p[0], str)
                                                      and _int(p[1]) and _int(p[2]) and 0 <= p[1] <= p[2] for p in s))
            for s in v),
    }
    for key, ok in checks.items():
        if key in info and not ok(info[key]):
            info.pop(key)
    return info


def detail(record: Mapping) -> dict:
    """What the page shows of one problem when it is opened."""
    candidates = record.get("candidates") or []
    info = _clean_info(record.get("info") or {}, len(candidates))
    return {
        "id": record.get("id"), "strategy": record.get("strategy"), "question": record.get("question"),
        "reference": record.get("reference"), "answer": record.get("answer"), "correct": record.get("correct"),
        "outcome": explain.outcome(record), "chosen": record.get("chosen"),
        "why": explain.why_chosen({**record, "info": info}),
        "candidates": candidates, "info": info,
        "ledger": record.get("ledger") or {}, "metadata": record.get("metadata") or {},
        "dataset": record.get("dataset"), "model": record.get("model"),
    }


def _add_ledger(totals: dict, ledger: Mapping) -> None:
    for key, value in ledger.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            totals[key] = totals.get(key, 0) + value


def collect(files: Sequence[str | Path]) -> tuple[dict, list[str]]:
    """The page's data and the detail blocks of its records, in row order. Each file is read once, checked
    as ``tts report`` checks it (a file that is not a results file is a ViewError naming it)."""
    from ..report import ReportError, build_report
    from ..results import ResultsFileError

    strategies: list[list] = []  # index -> [file index, strategy name]
    index: dict[tuple[int, str], int] = {}
    rows: list[list] = []
    details: list[str] = []
    ledgers: list[dict[str, dict]] = [{} for _ in files]

    def keep(file_index: int, record: Mapping) -> None:
        key = (file_index, record["strategy"])
        if key not in index:
            index[key] = len(strategies)
            strategies.append([file_index, record["strategy"]])
        rows.append(explain.row(record, file_index, index[key]))
        details.append(_safe_json(detail(record)))
        _add_ledger(ledgers[file_index].setdefault(record["strategy"], {}), record.get("ledger") or {})

    try:
        report = build_report(files, each=keep)
    except (ReportError, ResultsFileError) as exc:
        raise ViewError(exc.format_message() if isinstance(exc, ReportError) else str(exc)) from None
    for f, totals in zip(report["files"], ledgers):
        f["ledger_totals"] = totals
    data = {"report": report, "strategies": strategies, "fields": list(explain.ROW_FIELDS),
            "outcomes": list(explain.OUTCOMES), "rows": rows}
    return data, details


def render(files: Sequence[str | Path], title: str | None = None) -> str:
    data, details = collect(files)
    title = title or "tts view: " + ", ".join(Path(f).name for f in files)
    style = (ASSETS / "view.css").read_text()
    script = (ASSETS / "view.js").read_text()
    body = (ASSETS / "view.html").read_text()
    parts = [MARKER, "\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
             "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
             # nothing on this page may reach the network: the policy refuses any load but inline ones
             "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
             "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">",
             f"<title>{_html_text(title)}</title><style>{style}</style></head><body>",
             body.replace("{{title}}", _html_text(title)),
             f"<script type=\"application/json\" id=\"tts-data\">{_safe_json(data)}</script>\n"]
    parts.extend(f"<script type=\"application/json\" id=\"p{i}\">{d}</script>\n" for i, d in enumerate(details))
    parts.append(f"<script>{script}</script></body></html>\n")
    return "".join(parts)


def _html_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def check_output(output: str | Path, inputs: Iterable[str | Path]) -> Path:
    """The page's path, refused (ViewError) when writing it could destroy something: an input file, a
    folder, a missing folder, or an existing file this command did not write."""
    out = Path(output)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ViewError(f"-o {output}: the page's file name must end in .html")
    if out.is_dir():
        raise ViewError(f"-o {output} is a folder; give a file such as {out / 'report.html'}")
    if not out.parent.is_dir():
        raise ViewError(f"-o {output}: no folder {out.parent}")
    for f in inputs:
        if Path(f).exists() and out.exists() and os.path.samefile(f, out):
            raise ViewError(f"-o {output} is one of the results files; give another file name")
    if out.exists():
        if not out.is_file():
            raise ViewError(f"-o {output} is not a regular file")
        with open(out, "rb") as fh:
            head = fh.read(len(MARKER.encode()))
        if head != MARKER.encode():
            raise ViewError(f"-o {output} exists and was not written by tts view; remove it or choose another name")
    return out


def write(files: Sequence[str | Path], output: str | Path, title: str | None = None) -> Path:
    """Render the page and write it whole (a temporary file beside it, then a rename), so a failure
    never leaves half a page nor destroys the previous one."""
    if not files:
        raise ViewError("give at least one results file")
    out = check_output(output, files)
    page = render(files, title)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(page)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
