"""Model card of a training run: `python -m nin_edge.modelcard RUN_DIR [--evaluate ARCHIVE] [--out PATH]`.

Reads RUN_DIR/best.pt (the checkpoint chosen on the validation split) and writes Markdown: architecture,
command line and configuration, epochs, wall time, machine, the curve PNG, the per-epoch history and — with
`--evaluate` — top-1 and per-class accuracy on the archive's whole test split, measured here in fp32 through
THE preprocessing. Checkpoints written before the run recorded its command, machine or wall time (format 1
from the first nin-edge runs) still work: the card says what was not recorded and what it used instead.
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .errors import NinEdgeError

CARD_NAME = "MODEL_CARD.md"
# run options in the order `nin-edge train` lists them, with their CLI spelling
_OPTIONS = (("arch", "--arch"), ("data", "--data"), ("epochs", "--epochs"), ("batch_size", "--batch-size"),
            ("lr", "--lr"), ("weight_decay", "--weight-decay"), ("label_smoothing", "--label-smoothing"),
            ("warmup_frac", "--warmup-frac"), ("cutout", "--cutout"), ("cutmix", "--cutmix"), ("init_from", "--init-from"),
            ("teachers", "--teacher"), ("kd_alpha", "--kd-alpha"), ("kd_temperature", "--kd-temperature"),
            ("kd_flip", "--kd-flip"), ("ema", "--ema"),
            ("val_size", "--val-size"), ("hold_out", "--hold-out"), ("seed", "--seed"), ("split_seed", "--split-seed"),
            ("precision", "--precision"), ("device", "--device"), ("max_minutes", "--max-minutes"),
            ("threads", "--threads"), ("out", "--out"))


@dataclass(frozen=True)
class TestEvaluation:
    source: str
    images: int
    top1: float
    per_class: tuple[tuple[str, int, int], ...]  # (class, images, correct)
    seconds: float


@dataclass(frozen=True)
class CardResult:
    path: Path
    evaluation: TestEvaluation | None
    markdown: str


def evaluate_test_split(model, classes, source: str, batch: int = 500) -> TestEvaluation:
    """fp32 top-1 and per-class accuracy on the whole test split of `source` (THE preprocessing, torch)."""
    import time

    import torch

    from .data import check_classes, load_dataset
    from .preprocess import preprocess

    ds = load_dataset(source, "test")
    check_classes(ds, classes, "checkpoint")
    t0 = time.time()
    preds = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(ds), batch):
            preds.append(model(torch.from_numpy(preprocess(ds.images[i:i + batch]))).argmax(1).numpy())
    p = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    correct = p == ds.labels
    per_class = tuple((c, int((ds.labels == k).sum()), int(correct[ds.labels == k].sum())) for k, c in enumerate(classes))
    return TestEvaluation(str(source), len(ds), float(correct.mean() * 100.0) if len(ds) else float("nan"),
                          per_class, time.time() - t0)


def _sha256(path: Path) -> str:
    from .data import sha256_file

    return sha256_file(path)


def _fmt_pct(v) -> str:
    return "—" if v is None else f"{v:.2f}%"


def _fmt_minutes(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    m = seconds / 60
    return f"{m:.1f} min" if m < 90 else f"{m / 60:.2f} h ({m:.0f} min)"


def _run_command(ck: dict, data: str | None) -> tuple[str, str]:
    """The command that reproduces a run, and how the card got it.

    A checkpoint records the command line of the run's latest start; `--resume` (and `--force`) only say what to
    do with an existing out dir, and `--resume` on a fresh one is refused, so they are dropped from the card.
    """
    recorded = ck.get("command")
    if not recorded:
        return _equivalent_command(ck, data), "equivalent command built from its stored run options"
    parts = shlex.split(recorded)
    kept = [p for p in parts if p not in ("--resume", "--force")]
    if len(kept) == len(parts):
        return recorded, "as recorded"
    return shlex.join(kept), "as recorded, without the `--resume`/`--force` of its latest start"


def _equivalent_command(ck: dict, data: str | None) -> str:
    """A `nin-edge train` command with the run-defining options (for runs that did not record theirs)."""
    cfg = dict(ck.get("run", {}))
    cfg.update(ck.get("config", {}))
    cfg.setdefault("arch", ck.get("arch"))
    if data:
        cfg["data"] = data
    parts = ["nin-edge", "train"]
    for key, flag in _OPTIONS:
        v = cfg.get(key)
        if v is None:
            if key == "data":
                parts += [flag, "ARCHIVE"]
            continue
        if isinstance(v, bool):  # a switch (--kd-flip): named when on
            parts += [flag] if v else []
            continue
        for one in (v if isinstance(v, (list, tuple)) else [v]):  # --teacher repeats
            parts += [flag, str(one)]
    return shlex.join(parts).replace("ARCHIVE", "<the training archive>")


def _stage_seconds(ck: dict) -> float | None:
    """A run's training wall time: the elapsed_s of its last recorded epoch (best.pt's own is at its epoch),
    else the sum of its epochs (evaluation excluded)."""
    hist = ck.get("history") or []
    for rec in (hist[-1] if hist else {}, ck):
        if rec.get("elapsed_s") is not None:
            return float(rec["elapsed_s"])
    return sum(float(h.get("epoch_seconds", 0.0)) for h in hist) or None


def _warm_start_lines(init: dict, stage1: dict | None, data: str | None,
                      level: int = 0, refit: str | None = None) -> tuple[list[str], float | None, int | None]:
    """The card's section on a run this one started from (--init-from, `level` steps back); → (lines, its
    training seconds, its epochs)."""
    if stage1 is not None and stage1.get("history"):  # the loaded run knows its length better than the record
        init = {**init, "epochs_total": len(stage1["history"])}
    head, who = ("## Warm start", "This run") if level == 0 else (f"### … which started from (level {level + 1})",
                                                                  "That run")
    lines = [head, "",
             f"{who} started from the weights of `{init.get('path')}` (sha256 `{str(init.get('sha256'))[:16]}…`): "
             f"epoch {init.get('epoch')} of a {init.get('epochs_total') or '?'}-epoch run, validation top-1 "
             f"{_fmt_pct(init.get('val_top1'))}, test top-1 {_fmt_pct(init.get('test_top1'))} (training precision). "
             + (f"Those weights are a narrower `{init['widened_from']}`: the run started from a function-preserving "
                "widening of them (Net2WiderNet: copied channels, outgoing weights split among the copies). "
                if init.get("widened_from") else "")
             + "Optimiser state and learning-rate schedule started fresh; "
             + (f"this run has no validation split (`--val-size 0`): it trains on {refit}, including the images "
                "the earlier runs held out, and chooses nothing." if refit and level == 0 else
                "the validation split is the same one, so it stayed held out in every run."), ""]
    secs = None
    if stage1 is not None:
        secs = _stage_seconds(stage1)
        cmd, how = _run_command(stage1, data)
        lines += [f"Its command ({how}); {_fmt_minutes(secs) if secs else 'wall time not recorded'} of training:",
                  "", "```", cmd, "```", ""]
    else:
        lines += ["(The starting checkpoint is not at that path any more, so its own command and wall time are "
                  "not shown.)", ""]
    return lines, secs, init.get("epochs_total")


def _left_out(bn: dict) -> list[str]:
    """What a BatchNorm re-estimation record says was kept out of its images."""
    return ([f"the {bn['val_size']:,}-image validation split"] if bn["val_size"] else []) + \
        ([f"the `{bn['hold_out']}` hold-out"] if bn["hold_out"] else [])


def _average_lines(avg: dict) -> list[str]:
    """The Weight average section: each run averaged, its validation as given, and the average's."""
    n = avg.get("val_images") or 0
    lines = ["## Weight average", "",
             f"The weights are the uniform mean of {len(avg['ingredients'])} runs' weights (`nin-edge average`, "
             f"{avg['seconds']:.0f} s); validation top-1 in fp32 on the same {n:,} held-out train images:", "",
             "| run | sha256 | seed | epochs | wall time | validation top-1 |", "|---|---|---:|---:|---:|---:|"]
    wall = 0.0
    for i in avg["ingredients"]:
        secs = i.get("elapsed_s")
        wall = wall + secs if (wall is not None and secs is not None) else None
        lines.append(f"| `{i['path']}` | `{str(i['sha256'])[:16]}…` | {i.get('seed')} | {i.get('epochs')} | "
                     f"{_fmt_minutes(secs) if secs is not None else 'not recorded'} | {_fmt_pct(i.get('val_top1'))} |")
    lines.append(f"| **the average** | | | | {_fmt_minutes(wall) + ' in all' if wall else ''} | "
                 f"**{_fmt_pct(avg.get('val_top1'))}** |")
    bn = avg.get("bn_update")
    lines += [""]
    if bn:
        left = _left_out(bn)
        lines += [f"BatchNorm statistics re-estimated after averaging on {bn['images']:,} of the runs' training images "
                  "as they are (no augmentation" + (f"; {' and '.join(left)} left out" if left else "")
                  + f"), batches of {bn['batch']}, seed {bn['seed']}.", ""]
    lines += ["```", avg.get("command") or "(started from Python: no command line recorded)", "```", ""]
    for k, i in enumerate(avg["ingredients"], 1):
        if i.get("command"):
            lines += [f"Run {k} (`{i['path']}`):", "", "```", i["command"], "```", ""]
    return lines


def _distillation_lines(kd: dict, teachers: list[tuple[str | None, str, dict | None]], data: str | None,
                        refit: str | None = None) -> list[str]:
    """The card's section on --teacher: what the student was matched to, and each teacher's own record."""
    alpha, t = kd.get("alpha"), kd.get("temperature")
    lines = ["## Distillation", "",
             f"Trained to match the mean of the probabilities of {len(teachers)} teacher"
             f"{'s' if len(teachers) > 1 else ''}, softened at temperature {t} "
             f"(weight {alpha}; the labels keep {1 - float(alpha):.2g}), computed on the very augmented batch the "
             "student saw" + (" and on its mirror image, averaged (`--kd-flip`)" if kd.get("flip") else "") + ". "
             + ("This run has no validation split (`--val-size 0`), so teachers from any split may "
                "feed it; a teacher trained with a held-out split labels images it never trained "
                "on too."
                if refit else "The teachers were trained on the same data with the same held-out "
                "validation split (checked at the start of the run)."), "",
             "| teacher | sha256 | arch | epoch | validation top-1 | test top-1 (training precision) |",
             "|---|---|---|---:|---:|---:|"]
    commands = []
    for path, sha, tck in teachers:
        if tck is None:
            lines.append(f"| `{path}` | `{sha[:16]}…` | not at that path any more | | | |")
            continue
        lines.append(f"| `{path}` | `{sha[:16]}…` | `{tck.get('arch')}` | {tck.get('epoch')} | "
                     f"{_fmt_pct(tck.get('val_top1'))} | {_fmt_pct(tck.get('test_top1'))} |")
        commands.append(_run_command(tck, data)[0])
    if commands:
        lines += ["", "Their commands:", "", "```", *commands, "```"]
    return lines + [""]


def render(ck: dict, run_dir: Path, card_path: Path, weights: Path, evaluation: TestEvaluation | None,
           data_matches: bool | None, run_record: dict | None = None,
           stages: list[tuple[dict, dict | None]] | None = None,
           teachers: list[tuple[str | None, str, dict | None]] | None = None) -> str:
    """`ck`: the card's checkpoint (weights, its epoch/accuracy); `run_record`: the run's last.pt (whole history)."""
    from . import __version__
    from .envinfo import cpu_info
    from .models import count_macs, count_params, create_model, model_info

    arch, classes = ck["arch"], list(ck["classes"])
    info = model_info(arch)
    net = create_model(arch, num_classes=len(classes))
    rec = run_record if run_record is not None else ck
    history = list(rec.get("history", []))
    cfg = {**ck.get("run", {}), **ck.get("config", {})}
    epochs_planned = cfg.get("epochs")
    last = history[-1] if history else {}
    epoch = ck.get("epoch")
    bn = ck.get("bn_update")
    measured = bn["from"] if bn else ck  # the run's own accuracies were of the statistics before update-bn
    avg = ck.get("average")  # `nin-edge average`: the weights are the mean of several runs' (first run's record)

    if "elapsed_s" in last:
        wall = f"{_fmt_minutes(float(last['elapsed_s']))} (wall clock of the training process, evaluation included)"
    elif history:
        s = sum(float(h.get("epoch_seconds", 0.0)) for h in history)
        wall = f"≥ {_fmt_minutes(s)} (sum of the training epochs; evaluation time was not recorded)"
    else:
        wall = "not recorded"

    machine = ck.get("machine")
    if machine:
        mach = (f"{machine.get('cpu')} ({machine.get('cpu_threads')} hardware threads, torch threads "
                f"{machine.get('torch_threads')})" + (f", GPU {machine['gpu']}" if machine.get("gpu") else "")
                + f", device {machine.get('device')}, {machine.get('world_size')} process(es), "
                f"torch {machine.get('torch')}")
    else:
        cpu = cpu_info()
        mach = (f"not recorded in the checkpoint; this card was written on {cpu['model']} "
                f"({cpu['threads']} hardware threads)")

    if ck.get("command"):
        command, how = _run_command(ck, None)
        command_note = how.replace("as recorded", "as recorded by the run", 1)
    else:
        data = evaluation.source if (evaluation and data_matches) else cfg.get("data")
        command = _equivalent_command(ck, data)
        command_note = ("not recorded (the run was started from Python, or by an older nin-edge); an equivalent "
                        "command built from the run options stored in the checkpoint" + (" (the --data archive identified by its sha256)"
                                                      if data_matches else ""))

    lines = [f"# Model card: `{arch}`", ""]
    lines += ["| | |", "|---|---|"]
    lines.append(f"| Architecture | `{arch}`: {info.description}; {count_params(net):,} parameters, "
                 f"{count_macs(net, info.input_size) / 1e6:.1f} M multiply-accumulates per image; input 3×"
                 f"{info.input_size}×{info.input_size} |")
    lines.append(f"| Classes | {len(classes)}: {', '.join(classes)} |")
    size_mb = weights.stat().st_size / 1e6
    hold = (ck.get("run") or {}).get("hold_out")
    refit = None if cfg.get("val_size") != 0 else (f"every train image but the {hold['removed']:,} of "
                                                   f"`--hold-out {hold['source']}`" if hold else "every train image")
    vals = [(h.get("val_top1"), h["epoch"]) for h in history if h.get("val_top1") is not None]
    best_val = max(vals, key=lambda v: (v[0], -v[1])) if vals else None  # best.pt keeps the first of a tie
    end_of_schedule = not refit and best_val is not None and epoch == epochs_planned and epoch != best_val[1]
    if avg:
        seeds = ", ".join(str(i["seed"]) for i in avg["ingredients"])
        how = (f"uniform average of {len(avg['ingredients'])} runs' weights (seeds {seeds}; see Weight average), "
               f"validation top-1 {_fmt_pct(avg['val_top1'])} (fp32, measured after averaging on the split held out "
               "of train), never chosen on test")
        epoch = f"{epoch} of each run"
    elif refit:
        how = (f"the last epoch of a run without validation (`--val-size 0`, trained on {refit}): chosen "
               "before the run, never on test")
    elif end_of_schedule:  # e.g. last.pt shipped by a rule fixed before the run, whatever its validation
        how = (f"the end of the schedule, validation top-1 {_fmt_pct(measured.get('val_top1'))} on the split held "
               f"out of train; taken as the last epoch, not chosen by validation (the best validation epoch was "
               f"{best_val[1]}, {_fmt_pct(best_val[0])}), never on test")
    else:
        how = (f"validation top-1 {_fmt_pct(measured.get('val_top1'))} (chosen on the validation split held out "
               "of train, never on test)")
    lines.append(f"| Weights | `{weights.name}` ({size_mb:.1f} MB, sha256 `{_sha256(weights)[:16]}…`): "
                 f"epoch {epoch}, {how} |")
    if evaluation:
        lines.append(f"| **Top-1, full test split** | **{evaluation.top1:.2f}%** on {evaluation.images:,} images "
                     f"(fp32, measured for this card) |")
    if avg:
        first = avg["ingredients"][0]
        lines.append(f"| Weight average | {len(avg['ingredients'])} runs on the same data and validation split, every "
                     "weight averaged uniformly"
                     + (f", BatchNorm statistics re-estimated on {avg['bn_update']['images']:,} training images"
                        if avg.get("bn_update") else "") + "; the rows Epochs, Wall time, "
                     f"Machine, Seed and the sections Command, Configuration and history below describe the first "
                     f"run, `{first['path']}` |")
    else:
        lines.append(f"| Test top-1 during training | {_fmt_pct(measured.get('test_top1'))} at epoch {epoch} "
                     f"(in the training precision, {cfg.get('precision', '?')}"
                     + (", before the BatchNorm statistics were re-estimated" if bn else "") + ") |")
    if bn:
        lines.append(f"| BatchNorm statistics | re-estimated after training on {bn['images']:,} of the run's "
                     "training images as they are (`nin-edge update-bn`, see below) |")
    trained = f"{len(history)} of {epochs_planned} planned" if epochs_planned else f"{len(history)}"
    # runs this one warm-started from, nearest first: (the init record stored here, that run's checkpoint or None)
    stages = stages if stages is not None else ([(ck["init_from"], None)] if ck.get("init_from") else [])
    warm, prior_epochs, prior_secs = [], 0, 0.0
    data = evaluation.source if (evaluation and data_matches) else cfg.get("data")
    for level, (init, stage_ck) in enumerate(stages):
        part, secs, n = _warm_start_lines(init, stage_ck, data, level, refit)
        warm += part
        prior_epochs = prior_epochs + n if (prior_epochs is not None and n) else None
        prior_secs = prior_secs + secs if (prior_secs is not None and secs is not None) else None
    if stages:
        runs = "the run it started from" if len(stages) == 1 else f"the {len(stages)} runs it started from"
        trained += (f", after {prior_epochs} of {runs} ({len(history) + prior_epochs} in all; see Warm start)"
                    if prior_epochs else f", after an unknown number in {runs} (see Warm start)")
    lines.append(f"| Epochs | {trained} |")
    lines.append(f"| Wall time | {wall} |")
    if stages and prior_secs and "elapsed_s" in last:
        lines.append(f"| Wall time, all {len(stages) + 1} runs | {_fmt_minutes(prior_secs + float(last['elapsed_s']))} |")
    lines.append(f"| Machine | {mach} |")
    code = ck.get("code_version", "?") + (f", commit {ck['code_commit']}" if ck.get("code_commit") else "")
    lines.append(f"| Code | nin-edge {code} (card written by nin-edge {__version__}) |")
    data_txt = f"sha256 `{str(ck.get('data_sha256', '?'))[:16]}…`"
    if data_matches is not None:
        data_txt += " — the evaluated archive " + ("is the training archive (same sha256)" if data_matches
                                                   else "is NOT the training archive (different sha256)")
    lines.append(f"| Training data | {cfg.get('data', 'path not recorded')}, {data_txt} |")
    pp = ck.get("preprocess", {})
    if pp:
        lines.append(f"| Preprocessing | {pp.get('color', 'RGB')} uint8, {pp.get('resize', '')} to {pp.get('size')}, "
                     f"{pp.get('scale', '')}, mean {pp.get('mean')}, std {pp.get('std')}, {pp.get('layout', 'NCHW')} |")
    lines.append(f"| Seed | {ck.get('seed')} |")
    lines += ["", "## Command", "", f"{command_note}:", "", "```", command, "```", ""]
    if bn:
        src = bn["from"]
        left = _left_out(bn)
        lines += ["## BatchNorm statistics re-estimated", "",
                  f"After training, the BatchNorm running statistics of `{src['path']}` (sha256 "
                  f"`{str(src['sha256'])[:16]}…`) were replaced by their average over {bn['images']:,} of the run's "
                  "training images as they are (no augmentation, no mixing"
                  + (f"; {' and '.join(left)} left out" if left else "")
                  + f"), in batches of {bn['batch']} (seed {bn['seed']}), with the weights unchanged; "
                  f"{bn['seconds']:.0f} s:", "", "```",
                  bn.get("command") or "(started from Python: no command line recorded)", "```", ""]

    if avg:
        lines += _average_lines(avg)
    lines += warm
    if cfg.get("kd"):
        lines += _distillation_lines(cfg["kd"], teachers or [(None, sha, None) for sha in cfg["kd"]["teachers_sha256"]],
                                     data, refit)
    lines += ["## Configuration", "", "| option | value |", "|---|---|"]
    for key, flag in _OPTIONS:
        v = cfg.get(key)
        if v is not None and v is not False and v != [] and v != ():  # an unset switch is not shown
            lines.append(f"| `{flag}` | {', '.join(map(str, v)) if isinstance(v, (list, tuple)) else v} |")
    lines.append("")

    if evaluation:
        lines += ["## Per-class accuracy (full test split, fp32)", "",
                  f"Measured on all {evaluation.images:,} images of the `test` split of `{evaluation.source}` in "
                  f"{evaluation.seconds:.0f} s.", "", "| class | images | correct | top-1 |", "|---|---:|---:|---:|"]
        for c, n, k in evaluation.per_class:
            lines.append(f"| {c} | {n:,} | {k:,} | {100.0 * k / n:.2f}% |" if n else f"| {c} | 0 | 0 | — |")
        lines.append(f"| **all** | **{evaluation.images:,}** | **{sum(k for _, _, k in evaluation.per_class):,}** "
                     f"| **{evaluation.top1:.2f}%** |")
        lines.append("")
    else:
        lines += ["## Test accuracy", "", "Not measured for this card: run it with `--evaluate ARCHIVE` to measure "
                  "top-1 and per-class accuracy on the whole test split.", ""]

    curves = run_dir / "curves.png"
    if curves.exists():
        rel = os.path.relpath(curves, card_path.parent)
        lines += ["## Curves", "", f"![training loss and top-1 per epoch]({Path(rel).as_posix()})", ""]

    if history:
        lines += ["## Per-epoch history", "",
                  (f"The first averaged run, `{avg['ingredients'][0]['path']}`; its validation figures are of its "
                   "own weights, in its training precision. " if avg else
                   "No validation split in this run (`--val-size 0`): it chose nothing; the last epoch was fixed "
                   "before the run. " if refit else
                   "Validation = train images held out of training (it chose best.pt; the card's weights are "
                   "the last epoch). " if end_of_schedule else
                   "Validation = train images held out of training (chooses the checkpoint). ")
                  + "Test top-1 here is in the training precision.", "",
                  "| epoch | train loss | val top-1 | test top-1 | lr (end) | epoch s | img/s |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for h in history:
            lines.append(f"| {h['epoch']} | {h['train_loss']:.4f} | {_fmt_pct(h.get('val_top1'))} | "
                         f"{_fmt_pct(h.get('test_top1'))} | {h.get('lr', 0):.4g} | {h.get('epoch_seconds', 0):.0f} | "
                         f"{h.get('images_per_s', 0):.0f} |")
        lines.append("")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines += [f"_Written {stamp} by `python -m nin_edge.modelcard`._", ""]
    return "\n".join(lines)


def write_model_card(run_dir: str | os.PathLike, evaluate: str | None = None, out: str | os.PathLike | None = None,
                     weights: str = "best.pt", force: bool = False, threads: int | None = None) -> CardResult:
    from .checkpoint import load_checkpoint, load_model, run_history
    from .data import sha256_file

    run = Path(run_dir)
    if not run.is_dir():
        raise NinEdgeError(f"{run}: not a run directory")
    wpath = run / weights
    if not wpath.exists():
        raise NinEdgeError(f"{wpath}: no checkpoint in the run directory (expected {weights} from nin-edge train)")
    ck = load_checkpoint(wpath)
    if ck.get("format") == "state_dict" or "arch" not in ck:
        raise NinEdgeError(f"{wpath}: a plain state_dict has no training record to write a card from")
    card = Path(out) if out is not None else run / CARD_NAME
    if card.exists() and not force:
        raise NinEdgeError(f"{card}: already exists (use --force to replace it)")

    evaluation, data_matches = None, None
    if evaluate is not None:
        if threads:
            import torch

            torch.set_num_threads(threads)
        model, meta = load_model(wpath)
        evaluation = evaluate_test_split(model, meta["classes"], evaluate)
        p = Path(evaluate).expanduser()
        if p.is_file() and ck.get("data_sha256"):
            data_matches = sha256_file(p) == ck["data_sha256"]

    run_record = None
    if (run / "last.pt").exists() and wpath.name != "last.pt":
        run_record = load_checkpoint(run / "last.pt")
        run_record.pop("optimizer", None)
        if run_record.get("arch") != ck["arch"] or run_record.get("run") != ck.get("run"):
            raise NinEdgeError(f"{run / 'last.pt'}: belongs to another run than {wpath} (arch or run options differ)")
    stages: list[tuple[dict, dict | None]] = []
    init = ck.get("init_from")
    while init and len(stages) < 8:  # follow --init-from back while the checkpoints are still where they were
        p = Path(init.get("path") or "")
        stage_ck = None
        if init.get("path") and p.is_file() and sha256_file(p) == init.get("sha256"):
            stage_ck = load_checkpoint(p)
            stage_ck.pop("optimizer", None)
            stage_ck["history"] = run_history(p, stage_ck)
        stages.append((init, stage_ck))
        init = (stage_ck or init).get("init_from")
    teachers = []
    kd = (ck.get("run") or {}).get("kd")
    if kd:  # each --teacher's own record, read from its file while it is still where it was and unchanged
        paths = list((ck.get("config") or {}).get("teachers") or [None] * len(kd["teachers_sha256"]))
        for path, sha in zip(paths, kd["teachers_sha256"]):
            tck = None
            if path and Path(path).is_file() and sha256_file(Path(path)) == sha:
                tck = load_checkpoint(Path(path))
                tck.pop("optimizer", None)
            teachers.append((path, sha, tck))
    md = render(ck, run, card, wpath, evaluation, data_matches, run_record, stages, teachers)
    card.parent.mkdir(parents=True, exist_ok=True)
    tmp = card.with_name(f".{card.name}.tmp")
    tmp.write_text(md)
    os.replace(tmp, card)
    return CardResult(card, evaluation, md)


def build_app():
    """The `python -m nin_edge.modelcard` command (a Typer app of its own; errors → one line, exit 2)."""
    import typer

    from .cli._common import guard

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.command()
    def modelcard(
        run_dir: str = typer.Argument(..., help="training run directory (best.pt, last.pt, curves.png)"),
        evaluate: str = typer.Option(None, help="data source whose whole test split is evaluated (fp32)"),
        out: str = typer.Option(None, help=f"card path (default RUN_DIR/{CARD_NAME})"),
        weights: str = typer.Option("best.pt", help="checkpoint file inside RUN_DIR"),
        threads: int = typer.Option(None, min=1, help="torch CPU threads for the evaluation"),
        force: bool = typer.Option(False, help="replace an existing card"),
    ) -> None:
        """Write a Markdown model card for a nin-edge training run."""
        with guard():
            r = write_model_card(run_dir, evaluate, out, weights, force, threads)
            top = f"; top-1 {r.evaluation.top1:.2f}% on {r.evaluation.images:,} test images" if r.evaluation else ""
            typer.echo(f"wrote {r.path}{top}")

    return app


def main(argv: list[str] | None = None) -> None:
    build_app()(args=argv)


if __name__ == "__main__":
    main()
