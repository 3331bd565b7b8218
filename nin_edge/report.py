"""Bench results out: JSON (versioned schema), a rich table, Markdown + PNG plots.

JSON schema "nin-edge-bench/1" (`to_json_dict`; every key always present, null where not measured):

    schema        "nin-edge-bench/1"
    created       ISO-8601 UTC time of the run
    environment   envinfo.environment(): versions{pkg: version}, cpu{model, arch, threads, isa{flag: bool}},
                  gpus[...], python, os
    bundle        {path, sha256 (of bundle.json, which holds every artifact's sha256), arch, classes, input_size,
                   tta ("none" | "flip": mirror averaging inside every artifact), forward_passes_per_image
                   (of the network; 2 with flip: every latency row includes both)}
    data          {source, split, images}
    settings      {timed ("inference"|"end-to-end"), timed_description, warmup, iters, seconds, rounds,
                   batches, threads_requested, affinity [cpu ids], gc_paused_while_timing, clock, eval_batch,
                   load_average {before, after}}
    reference     null | {runner, precision, artifact, top1, top5}       (the fp32 reference; top-k in %)
    rows[]        {label, runner, precision, device, status ("ok"|"unavailable"|"failed"), reason,
                   threads (used), artifact, artifact_override (named explicitly, not the default),
                   artifact_bytes, executed {what the runner reports it ran:
                   executed_precision, provider/hints, threads_used, call_path, ...}, load_s, peak_rss_mb, rss_added_mb,
                   accuracy: null | {images, top1, top5, agreement, top1_drop, max_abs_logit_diff},
                   latency[]: {batch, iters, warmup, median_ms, p90_ms, p99_ms, mean_ms, std_ms, cv, min_ms,
                               images_per_s, round_medians_ms[], noisy, samples_ms[] (omitted with
                               samples=False)}}
    auto[]        {batch, precision, chosen, why, candidates {label: median ms | reason}}
    notes[]       strings (contention, noisy rows, missing reference)
    verdicts[]    {spec, source, status ("PASS"|"FAIL"|"N/A"), row, criteria[]: {name, required, measured,
                   status, detail}}

Units: times in ms, accuracy in %, drops in percentage points, sizes in bytes, memory in MiB.
A new field may be added within a schema version; renaming or removing one bumps it to /2.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

from .atomic import atomic_write_text
from .bench import BenchReport
from .errors import NinEdgeError

TOP_LEVEL_KEYS = ("schema", "created", "environment", "bundle", "data", "settings", "reference", "rows", "auto",
                  "notes", "verdicts")
ROW_KEYS = ("label", "runner", "precision", "device", "status", "reason", "threads", "artifact", "artifact_override",
            "artifact_bytes", "executed", "accuracy", "latency", "load_s", "peak_rss_mb", "rss_added_mb")
LATENCY_KEYS = ("batch", "iters", "warmup", "median_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "cv", "min_ms",
                "images_per_s", "round_medians_ms", "noisy", "samples_ms")


def _tta_note(report: BenchReport) -> str:
    b = report.bundle
    return "" if b.get("tta", "none") == "none" else \
        f" with {b['tta']} TTA ({b['forward_passes_per_image']} forward passes per image)"


def to_json_dict(report: BenchReport, verdicts=(), samples: bool = True) -> dict:
    d = dataclasses.asdict(report)
    if not samples:
        for r in d["rows"]:
            for s in r["latency"]:
                s.pop("samples_ms", None)
    d["verdicts"] = [dataclasses.asdict(v) for v in verdicts]
    return {k: d[k] for k in TOP_LEVEL_KEYS}


def _check_out(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise NinEdgeError(f"{path}: already exists (use --force to replace it)")


def write_json(report: BenchReport, path: str | os.PathLike, verdicts=(), force: bool = False,
               samples: bool = True) -> Path:
    p = Path(path)
    _check_out(p, force)
    return atomic_write_text(p, json.dumps(to_json_dict(report, verdicts, samples), indent=1) + "\n")


# --------------------------------------------------------------------------- text
def _fmt(v, spec: str = "{:.3f}", none: str = "-") -> str:
    return none if v is None else spec.format(v)


def _mb(b) -> str:
    return "-" if b is None else f"{b / 1e6:.2f}"


def table_rows(report: BenchReport) -> list[dict]:
    """One flat dict per (row, batch) for tables: the shared view of the rich table and the Markdown."""
    out = []
    for r in report.rows:
        ex = r.executed.get("executed_precision", r.precision) if r.status == "ok" else r.precision
        common = {"target": r.label, "precision": ex, "device": r.device, "threads": _fmt(r.threads, "{}"),
                  "top1": _fmt(r.accuracy.top1 if r.accuracy else None, "{:.2f}"),
                  "agree": _fmt(r.accuracy.agreement if r.accuracy else None, "{:.2f}"),
                  "size_mb": _mb(r.artifact_bytes), "rss_mb": _fmt(r.peak_rss_mb, "{:.0f}"),
                  "status": r.status if r.status == "ok" else f"{r.status}: {r.reason}"}
        if not r.latency:
            out.append({**common, "batch": "-", "median": "-", "p90": "-", "p99": "-", "cv": "-", "ips": "-"})
        for s in r.latency:
            out.append({**common, "batch": str(s.batch), "median": f"{s.median_ms:.3f}", "p90": f"{s.p90_ms:.3f}",
                        "p99": f"{s.p99_ms:.3f}", "cv": f"{s.cv:.2f}" + (" noisy" if s.noisy else ""),
                        "ips": f"{s.images_per_s:,.0f}"})
    return out


COLUMNS = (("target", "target"), ("precision", "precision (executed)"), ("device", "device"), ("threads", "threads"),
           ("batch", "batch"), ("median", "median ms"), ("p90", "p90 ms"), ("p99", "p99 ms"), ("cv", "CV"),
           ("ips", "img/s"), ("top1", "top-1 %"), ("agree", "agree %"), ("size_mb", "size MB"),
           ("rss_mb", "peak RSS MiB"), ("status", "status"))


SCREEN_COLUMNS = (("target", "target"), ("threads", "thr"), ("batch", "batch"), ("median", "median ms"),
                  ("p99", "p99 ms"), ("cv", "CV"), ("ips", "img/s"), ("top1", "top-1"), ("agree", "agree"),
                  ("size_mb", "MB"), ("rss_mb", "RSS"))


def print_report(report: BenchReport, verdicts=(), console=None) -> None:
    """A compact rich table (details that do not fit go below it; the Markdown/JSON have every column)."""
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    con = console or Console()
    if console is None and not con.is_terminal:
        con = Console(width=150)  # logs/pipes: one line per row instead of wrapping at 80 columns
    ref = report.reference
    t = Table(box=box.SIMPLE_HEAD, title=f"nin-edge bench: {report.bundle['arch']}{_tta_note(report)}, "
                    f"{report.data['source']} ({report.data['images']} images), timed {report.settings['timed']}")
    for _, head in SCREEN_COLUMNS:
        t.add_column(head, overflow="fold", no_wrap=(head == "target"))
    footnotes = []
    for row in table_rows(report):
        cells = [row[k] for k, _ in SCREEN_COLUMNS]
        if row["status"] != "ok":
            footnotes.append(f"{row['target']}: {row['status']}")
            cells = [row["target"]] + ["-"] * (len(cells) - 1)
        t.add_row(*map(escape, cells))
    con.print(t)
    seen = set()
    for r in report.rows:
        if r.status == "ok" and r.label not in seen:
            seen.add(r.label)
            ex = r.executed
            via = f", called through the {ex['call_path']}" if ex.get("call_path") else ""
            con.print(f"  {escape(r.label)}: executed {ex.get('executed_precision', r.precision)}, "
                      f"{r.threads} threads, artifact {r.artifact}{escape(via)}")
    for f in dict.fromkeys(footnotes):
        con.print(f"  [yellow]{escape(f)}[/yellow]")
    if ref:
        con.print(f"fp32 reference: {ref.runner} {ref.artifact}: top-1 {ref.top1:.2f}%, top-5 {ref.top5:.2f}%; "
                  "top-1/agree in %, MB on disk, RSS = peak resident MiB")
    con.print(f"timed: {report.settings['timed_description']}; warm-up {report.settings['warmup']}, "
              f"{report.settings['rounds']} rounds; affinity CPUs {report.settings['affinity']}")
    for a in report.auto:
        con.print(f"auto (batch {a.batch}): {escape(a.why)}")
    for n in report.notes:
        con.print(f"[yellow]note:[/yellow] {escape(n)}")
    for v in verdicts:
        colour = {"PASS": "green", "FAIL": "red", "N/A": "yellow"}[v.status]
        con.print(f"[{colour}]{v.status}[/{colour}] {v.spec} ({v.source})" + escape(f" — row: {v.row}" if v.row else ""))
        for c in v.criteria:
            cc = {"PASS": "green", "FAIL": "red", "N/A": "yellow"}[c.status]
            con.print(f"   [{cc}]{c.status:4}[/{cc}] " + escape(f"{c.name}: required {c.required}, measured "
                                                               f"{c.measured}" + (f" — {c.detail}" if c.detail else "")))


def to_markdown(report: BenchReport, verdicts=(), plots: tuple[str, ...] = ()) -> str:
    env = report.environment
    cpu = env.get("cpu", {})
    lines = ["# nin-edge bench report", "",
             f"- created: {report.created}",
             f"- machine: {cpu.get('model')} ({cpu.get('arch')}, {cpu.get('threads')} threads; ISA: "
             + ", ".join(k for k, v in cpu.get("isa", {}).items() if v) + f"); GPUs: {', '.join(env.get('gpus') or []) or 'none'}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items()),
             f"- bundle: `{report.bundle['path']}` ({report.bundle['arch']}{_tta_note(report)}, bundle.json sha256 "
             f"{report.bundle['sha256'][:16]}…)",
             f"- data: {report.data['source']} split {report.data['split']}, {report.data['images']} images",
             f"- timed: {report.settings['timed']} — {report.settings['timed_description']}",
             f"- loop: warm-up {report.settings['warmup']} discarded, {report.settings['rounds']} rounds, "
             + (f"{report.settings['iters']} calls" if report.settings['iters'] else f"{report.settings['seconds']} s")
             + f" per batch size; {report.settings['clock']}; GC paused; affinity CPUs {report.settings['affinity']}"]
    if report.reference:
        r = report.reference
        lines.append(f"- fp32 reference: {r.runner} on `{r.artifact}`: top-1 {r.top1:.2f}%, top-5 {r.top5:.2f}%")
    lines += ["", "| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in table_rows(report):
        lines.append("| " + " | ".join(row[k].replace("|", "\\|") for k, _ in COLUMNS) + " |")
    if report.auto:
        lines += ["", "## --target auto", ""] + [f"- batch {a.batch}: {a.why}" for a in report.auto]
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    if verdicts:
        lines += ["", "## Specs", ""]
        for v in verdicts:
            lines.append(f"### {v.status} — {v.spec} (`{v.source}`)" + (f", row `{v.row}`" if v.row else ""))
            lines += ["", "| criterion | required | measured | result |", "|---|---|---|---|"]
            lines += [f"| {c.name} | {c.required} | {c.measured} | {c.status}{' — ' + c.detail if c.detail else ''} |"
                      for c in v.criteria]
            lines.append("")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- plots
def _horizontal(matplotlib) -> dict:
    # `orientation` arrived in matplotlib 3.10, which deprecated `vert`; the package allows >= 3.7
    major_minor = tuple(int(v) for v in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if major_minor >= (3, 10) else {"vert": False}


def plot_latency_distribution(report: BenchReport, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({s.batch for r in report.rows for s in r.latency})
    if not batches:
        return False
    fig, axes = plt.subplots(len(batches), 1, figsize=(9, 1.2 + 0.45 * max(
        sum(1 for r in report.rows if any(s.batch == b for s in r.latency)) for b in batches) * len(batches)),
        squeeze=False)
    for ax, b in zip(axes[:, 0], batches):
        data, names = [], []
        for r in report.rows:
            for s in r.latency:
                if s.batch == b and s.samples_ms:
                    data.append(s.samples_ms)
                    names.append(f"{r.label}")
        ax.boxplot(data, **_horizontal(matplotlib), showfliers=True, whis=(1, 99), flierprops={"markersize": 2, "alpha": 0.3})
        ax.set_yticks(range(1, len(names) + 1), names, fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel(f"ms per call, batch {b} (box: quartiles, whiskers: p1–p99)")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"Latency distribution per target ({report.settings['timed']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_accuracy_vs_latency(report: BenchReport, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(r.label, s.batch, s.median_ms, r.accuracy.top1) for r in report.rows if r.accuracy
           for s in r.latency[:1]]
    if not pts:
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, b, ms, top1 in pts:
        ax.scatter(ms, top1)
        ax.annotate(f"{label} (b{b})", (ms, top1), fontsize=7, xytext=(4, 3), textcoords="offset points")
    if report.reference:
        ax.axhline(report.reference.top1, ls="--", lw=0.8, color="grey", label="fp32 reference top-1")
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("median latency per call, ms (first batch size of each row)")
    ax.set_ylabel(f"top-1 % on {report.data['source']} ({report.data['images']} images)")
    ax.set_title("Accuracy vs latency across targets", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(report: BenchReport, out_dir: str | os.PathLike, verdicts=(), force: bool = False) -> Path:
    """report.md + latency_distribution.png + accuracy_vs_latency.png + bench.json, written atomically."""
    out = Path(out_dir)
    if out.exists() and not force:
        raise NinEdgeError(f"{out}: already exists (use --force to replace it)")
    if out.exists() and not (out / "report.md").exists() and any(out.iterdir()):
        raise NinEdgeError(f"{out}: exists and is not a nin-edge bench report; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        plots = []
        if plot_latency_distribution(report, tmp / "latency_distribution.png"):
            plots.append("latency_distribution.png")
        if plot_accuracy_vs_latency(report, tmp / "accuracy_vs_latency.png"):
            plots.append("accuracy_vs_latency.png")
        (tmp / "report.md").write_text(to_markdown(report, verdicts, tuple(plots)))
        write_json(report, tmp / "bench.json", verdicts)
        os.chmod(tmp, 0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
