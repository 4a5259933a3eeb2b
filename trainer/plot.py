"""``tess-train plot OUTPUT_DIR``: one picture of a run, ``OUTPUT_DIR/loss.png``.

What it reads (each is optional except the loss log; whatever is missing is left out)::

    OUTPUT_DIR/loss_log.jsonl                  {"step": N, "loss": x} per optimizer step
    OUTPUT_DIR/resume_log.jsonl                {"step": N, ...} each time a run resumed here
    OUTPUT_DIR/checkpoint-N/trainer_state.json log_history: eval loss and eval metrics
    OUTPUT_DIR/.syncd/state/committed/*.json   one record per checkpoint syncd committed
    OUTPUT_DIR/.syncd/syncd.log*               "checkpoint-N: committed ..." lines (older runs)
    OUTPUT_DIR/training-complete.json          the final model's step

The top panel draws the training loss (every step, and a running mean), the eval
loss, a dashed line where the run resumed and a tick where syncd committed a
checkpoint; the lower panel the other eval metrics. ``collect`` returns exactly the
series that ``draw`` plots, so a test can compare them with the files.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

LOSS_LOG = "loss_log.jsonl"  # tess_trainer.LOSS_LOG; not imported, that would load torch
RESUME_LOG = "resume_log.jsonl"
PLOT_NAME = "loss.png"
FINAL_MARKER = "training-complete.json"
SMOOTH_STEPS = 25  # running-mean window: per-step diffusion losses are noisy (random timesteps)
# log_history keys that describe the evaluation loop itself, not the model.
_NOT_METRICS = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "epoch", "step")
_COMMIT_LINE = re.compile(r"\b(checkpoint-(\d+)|final): committed\b")


@dataclass
class PlotData:
    """Everything one plot shows, as plain lists (steps on the x axis)."""

    output_dir: Path
    train_steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    eval_loss: tuple[list[int], list[float]] = field(default_factory=lambda: ([], []))
    eval_metrics: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    resumed_at: list[int] = field(default_factory=list)  # steps a run resumed from
    committed_at: list[int] = field(default_factory=list)  # steps whose checkpoint syncd committed
    final_committed_at: int | None = None  # the final model's step, once syncd committed it


def _jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines file; a torn line (a killed writer) is skipped."""
    out = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _checkpoint_step(name: str) -> int | None:
    m = re.fullmatch(r"checkpoint-(\d+)", name)
    return int(m.group(1)) if m else None


def _newest_log_history(output_dir: Path) -> list[dict]:
    """log_history of the newest checkpoint that has a readable trainer_state.json.

    Hugging Face carries the history across resumes, so the newest one holds it all.
    """
    found = []
    for d in output_dir.glob("checkpoint-*"):
        step = _checkpoint_step(d.name)
        if step is not None:
            found.append((step, d))
    for _, d in sorted(found, reverse=True):
        state = _read_json(d / "trainer_state.json")
        if state is not None and isinstance(state.get("log_history"), list):
            return [h for h in state["log_history"] if isinstance(h, dict)]
    return []


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def collect(output_dir: str | Path) -> PlotData:
    """Read a run's output folder into the series ``draw`` plots."""
    output_dir = Path(output_dir)
    data = PlotData(output_dir=output_dir)
    by_step: dict[int, float] = {}
    for rec in _jsonl(output_dir / LOSS_LOG):
        if isinstance(rec.get("step"), int) and _number(rec.get("loss")):
            by_step[rec["step"]] = float(rec["loss"])  # a rewritten step keeps its newest value
    data.train_steps = sorted(by_step)
    data.train_loss = [by_step[s] for s in data.train_steps]

    metrics: dict[str, dict[int, float]] = {}
    for h in _newest_log_history(output_dir):
        step = h.get("step")
        if not isinstance(step, int):
            continue
        for key, value in h.items():
            if key.startswith("eval_") and key not in _NOT_METRICS and _number(value):
                metrics.setdefault(key, {})[step] = float(value)
    loss = metrics.pop("eval_loss", {})
    data.eval_loss = (sorted(loss), [loss[s] for s in sorted(loss)])
    for key in sorted(metrics):
        steps = sorted(metrics[key])
        data.eval_metrics[key[len("eval_"):]] = (steps, [metrics[key][s] for s in steps])

    resumed = {rec["step"] for rec in _jsonl(output_dir / RESUME_LOG) if isinstance(rec.get("step"), int)}
    if data.train_steps and data.train_steps[0] > 1:
        resumed.add(data.train_steps[0] - 1)  # the log begins after a restored checkpoint
    data.resumed_at = sorted(resumed)

    committed: set[str] = set()
    state_dir = output_dir / ".syncd"
    for rec in (state_dir / "state" / "committed").glob("*.json"):
        committed.add(rec.stem)
    for log in sorted(state_dir.glob("syncd.log*")):
        try:
            text = log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        committed.update(m.group(1) for m in _COMMIT_LINE.finditer(text))
    data.committed_at = sorted(s for s in map(_checkpoint_step, committed) if s is not None)
    if "final" in committed:
        marker = _read_json(output_dir / FINAL_MARKER) or {}
        if isinstance(marker.get("step"), int):
            data.final_committed_at = marker["step"]
    return data


def _running_mean(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def draw(data: PlotData):
    """A matplotlib Figure of ``data`` (Agg canvas: no display, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = 2 if data.eval_metrics else 1
    fig = Figure(figsize=(10, 4.5 * panels), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    ax = axes[0]
    ax.plot(data.train_steps, data.train_loss, color="tab:blue", alpha=0.3, linewidth=0.8,
            label="training loss (each step)", gid="train_loss")
    window = min(SMOOTH_STEPS, len(data.train_loss) // 20)  # a short run is drawn as it is
    if window >= 3:
        ax.plot(data.train_steps, _running_mean(data.train_loss, window), color="tab:blue",
                linewidth=1.6, label=f"training loss (mean of {window} steps)", gid="train_loss_mean")
    if data.eval_loss[0]:
        ax.plot(*data.eval_loss, "o-", color="tab:orange", label="eval loss", gid="eval_loss")
    for i, step in enumerate(data.resumed_at):
        for a in axes:
            a.axvline(step, color="tab:red", linestyle="--", linewidth=1.2,
                      label="resumed" if i == 0 and a is ax else None, gid="resumed")
    if data.committed_at:
        # Ticks along the bottom edge, in axes coordinates so they do not rescale the loss axis.
        ax.plot(data.committed_at, [0.02] * len(data.committed_at), "|", color="tab:green",
                markersize=12, markeredgewidth=1.5, transform=ax.get_xaxis_transform(),
                label="checkpoint committed by syncd", gid="committed")
    if data.final_committed_at is not None:
        ax.plot([data.final_committed_at], [0.06], "*", color="tab:green", markersize=12,
                transform=ax.get_xaxis_transform(), label="final model committed", gid="final_committed")
    ax.set_ylabel("loss")
    ax.set_title(f"{data.output_dir.name}: {len(data.train_steps)} steps logged")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    if data.eval_metrics:
        mx = axes[1]
        for name, (steps, values) in data.eval_metrics.items():
            mx.plot(steps, values, "o-", label=name, gid=f"eval_{name}")
        mx.set_ylabel("eval metric")
        mx.grid(True, alpha=0.3)
        mx.legend(loc="best", fontsize="small")
    axes[-1].set_xlabel("step")
    return fig


def write_plot(output_dir: str | Path, out: str | Path | None = None):
    """Collect, draw and save; returns (png path, the figure, the data it shows)."""
    data = collect(output_dir)
    fig = draw(data)
    path = Path(out) if out is not None else Path(output_dir) / PLOT_NAME
    tmp = path.with_name(path.name + ".tmp.png")  # a reader never sees half a PNG
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)
    return path, fig, data
