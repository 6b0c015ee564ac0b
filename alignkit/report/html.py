"""``report.html``: the comparison as one file that opens from disk with no server and no network: the verdict
sentences, a sortable results table, the plots (PNG as data URIs), each entry's convergence curve, the head to
head table and a browser of every entry's samples (:mod:`alignkit.report.samples`). The data is one JSON blob;
the page (``page/``: template, CSS, plain JavaScript) draws it. Written beside ``report.md``, which it leaves
as it was."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from alignkit.eval.summary import GOLD_CI_HIGH, GOLD_CI_LOW, GOLD_MEAN, KL_MEAN
from alignkit.report.records import RunRecord
from alignkit.report.samples import sample_data
from alignkit.runlog import write_text

PAGE = Path(__file__).with_name("page")
FIGURES = (("frontier.png", "Gold reward vs KL to the reference at the primary temperature"),
           ("frontier_compute.png", "Gold reward vs training compute"),
           ("temperature.png", "Win rate vs the reference at each sampling temperature"))
RESULT_KEYS = ("label", "method", "sweep", "train_seed", GOLD_MEAN, GOLD_CI_LOW, GOLD_CI_HIGH,
               "proxy_reward_mean", KL_MEAN, "kl_ci_low", "kl_ci_high", "kl_kind", "win_rate_vs_reference",
               "win_rate_ci_low", "win_rate_ci_high", "distinct_2", "self_bleu", "mean_completion_tokens",
               "train_steps", "train_wall_s", "compute_flops", "convergence")
CAVEAT_SECTIONS = ("## Caveats", "## Failed entries")


def write_html(out: Path, runs: list[RunRecord], frame, matrix, index: dict, markdown: str) -> Path:
    """``out/report.html`` from what the report has built (``frame``: comparison.csv's rows, ``matrix``: the
    head-to-head win rates or None, ``index``: compare.json, ``markdown``: report.md), the plots read from
    ``out``."""
    data = page_data(runs, frame, matrix, index, markdown)
    data["figures"] = [{"src": _data_uri(out / name), "caption": caption} for name, caption in FIGURES
                       if (out / name).is_file()]
    path = out / "report.html"
    write_text(path, render_page(data))
    return path


def page_data(runs: list[RunRecord], frame, matrix, index: dict, markdown: str) -> dict:
    """Everything the page draws, as plain JSON-ready data."""
    shared, temperature = index["shared"], index["primary_temperature"]
    primary = frame[frame["temperature"] == temperature]
    results = json.loads(primary[[k for k in RESULT_KEYS if k in primary]].to_json(orient="records"))
    judge = shared["eval"]["judge"]
    samples = sample_data(runs)
    if judge == "gold":  # the judge's scores are the gold column: not sent twice
        for columns in [samples["reference"], *samples["entries"].values()]:
            columns.pop("judge", None)
    convergence = {e["label"]: e["convergence"]["label"] for e in index["entries"]}
    compute = index.get("compute") or {}
    return {
        "name": index["name"], "temperature": temperature, "facts": _facts(shared, temperature),
        "sentences": [s["sentence"] for s in index["matched_kl"]] + [s for s in (
            compute.get("sentence"), index.get("version_warning")) if s],
        "caveats": caveat_lines(markdown), "results": results,
        "entries": [{"label": r.label, "group": r.group, "method": r.summary.method,
                     "convergence": convergence[r.label], "trajectory": _trajectory(r)}
                    for r in runs if r.is_policy],
        "head_to_head": _head_to_head(matrix, index), "head_to_head_missing": _no_head_to_head(index),
        "judge": {"name": judge, "pairwise": bool(shared.get("judge_pairwise")), "is_gold": judge == "gold"},
        "samples": samples,
    }


def _facts(shared: dict, temperature: float) -> str:
    return (f"Starting policy {shared['model']}; task {shared['task']}; gold reward {shared['gold_reward']}; "
            f"judge {_judge_name(shared['eval']['judge'])}; "
            f"{shared.get('eval_prompts', shared['eval']['n_prompts'])} held-out prompts at temperature "
            f"{temperature:g}.")


def _judge_name(judge: str) -> str:
    return "the gold reward" if judge == "gold" else judge


def _trajectory(run: RunRecord) -> list[list]:
    """[step, gold, gold low, gold high, KL] of each checkpoint, in step order."""
    points = sorted(run.trajectory, key=lambda p: p["step"])
    return [[p["step"], *(p.get(k) for k in (GOLD_MEAN, GOLD_CI_LOW, GOLD_CI_HIGH, KL_MEAN))] for p in points]


def _head_to_head(matrix, index: dict) -> dict | None:
    if not matrix:
        return None
    labels, wins, low, high, n = matrix
    return {"labels": labels, "wins": wins.round(4).tolist(), "low": low.round(4).tolist(),
            "high": high.round(4).tolist(), "n": n, "kl": index.get("kl_by_entry") or {},
            "method": index["head_to_head"]["method"]}


def _no_head_to_head(index: dict) -> str:
    if index["shared"].get("judge_pairwise"):
        return (f"Not computed for a pairwise judge: {index['head_to_head']['judge']} compared each entry's "
                f"completion with the reference's only.")
    return "Not computed: fewer than two policies, or they were not evaluated on the same prompts."


def caveat_lines(markdown: str) -> list[str]:
    """The bullet points of report.md's caveats and failed entries, markdown emphasis dropped."""
    lines, inside = [], False
    for line in markdown.splitlines():
        if line.startswith("## "):
            inside = line in CAVEAT_SECTIONS
        elif inside and line.startswith("- "):
            lines.append(re.sub(r"\*\*|`", "", line[2:]))
    return lines


def render_page(data: dict) -> str:
    """The template with its CSS, script and data inlined (one pass: nothing inserted is scanned again)."""
    blob = json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    parts = {"style": (PAGE / "report.css").read_text(), "script": (PAGE / "report.js").read_text(),
             "title": _escape(f"Comparison: {data['name']}"),
             "data": blob.replace("<", "\\u003c")}  # no "</script>" can end the blob early
    return re.sub(r"<!--@(\w+)-->", lambda m: parts[m.group(1)], (PAGE / "report.html").read_text())


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
