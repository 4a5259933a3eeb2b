"""``tess-eval kg-rank CONFIG_OR_CHECKPOINT --test_file F [--mode head|tail|both] ...``

Ranks candidate entities for every quad of F with a trained TESS model (see
``kg_rank.py`` for the method) and prints MR, MRR and Hits@1/3/10 beside the random,
frequency and recurrence baselines. CONFIG_OR_CHECKPOINT is a training config (its
output folder's final model, else its newest complete checkpoint; its train and
validation files feed the baselines and the filter) or a model folder (a final model
or a ``checkpoint-N``; give ``--train_file`` for the count baselines).

    tess-eval kg-rank configs/tess_tiny_cpu.json --test_file data/kg_quads/validation.txt --mode both

Bad input is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

from syncd.errors import ConfigError, SyncdError

logger = logging.getLogger("tessync.trainer")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        raise ConfigError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tess-eval", description="Evaluate a trained TESS model.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    k = sub.add_parser("kg-rank", help="MR, MRR, Hits@k for temporal-KG quads")
    k.add_argument("target", help="training config (.json) or a model / checkpoint folder")
    k.add_argument("--test_file", required=True, help="quads, one or more per line joined by ' ||| '")
    k.add_argument("--mode", default="both", help="head, tail or both (default both)")
    k.add_argument("--neg_k", type=int, default=None,
                   help="rank against this many sampled negatives per query (default: every entity)")
    k.add_argument("--max_queries", type=int, default=None, help="a seeded sample of at most this many queries")
    k.add_argument("--t_eval", type=int, default=60, help="the fixed timestep (default 60, the fork's)")
    k.add_argument("--seed", type=int, default=42, help="noise and sampling seed (default 42)")
    k.add_argument("--reduce", default="mean", help="mean (default, the fork's) or sum of the token log-probs")
    k.add_argument("--batch_size", type=int, default=64, help="candidate texts per forward pass")
    k.add_argument("--train_file", default=None, help="training quads for the baselines and the filter "
                                                      "(default: the config's)")
    k.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when there is one)")
    k.add_argument("--amp", action="store_true", help="fp16 autocast (CUDA only)")
    k.add_argument("--json", action="store_true", help="print the result as one JSON object")
    k.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def _has_model(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(
        (folder / n).is_file() for n in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"))


def resolve_model(target: str) -> tuple[Path, object | None]:
    """The model folder to load, and the parsed config when ``target`` is one."""
    path = Path(target).expanduser()
    cfg = None
    if path.is_file():
        from .args import parse_config

        cfg = parse_config([target])
        folder = Path(cfg.training.output_dir)
    elif path.is_dir():
        folder = path
    else:
        raise ConfigError(f"no such config or model folder: {target}")
    if _has_model(folder):
        return folder, cfg
    steps = sorted((int(m.group(1)), p) for p in folder.glob("checkpoint-*")
                   if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and p.is_dir())
    for _, ckpt in reversed(steps):  # the newest one that finished writing (our marker, or HF's state file)
        if _has_model(ckpt) and ((ckpt / "checkpoint-complete.json").is_file()
                                 or (ckpt / "trainer_state.json").is_file()):
            return ckpt, cfg
    raise ConfigError(f"no trained model in {folder} (neither a final model nor a complete checkpoint-N)")


def load_model(folder: Path, device: str | None, cfg=None):
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from .model import TessRobertaModel

    hf_logging.disable_progress_bar()  # "Loading weights" would break the one-line error contract
    try:
        model = TessRobertaModel.from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load the model in {folder}: {str(e).strip().splitlines()[0]}") from None
    tok_source = folder
    if not (folder / "tokenizer_config.json").is_file() and cfg is not None:
        tok_source = cfg.model.tokenizer_name or cfg.model.model_name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_source)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load a tokenizer from {tok_source}: {str(e).strip().splitlines()[0]}") from None
    name = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
        model.to(dev)
    except (RuntimeError, AssertionError) as e:
        raise ConfigError(f"--device {name}: {str(e).strip().splitlines()[0]}") from None
    return model, tokenizer


def kg_rank(args) -> int:
    from . import kg_rank as K

    if args.mode not in (*K.MODES, "both"):
        raise ConfigError(f"--mode must be head, tail or both, not {args.mode!r}")
    if args.reduce not in ("mean", "sum"):
        raise ConfigError(f"--reduce must be mean or sum, not {args.reduce!r}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch_size must be at least 1, not {args.batch_size}")
    test = K.read_quads(args.test_file, "test_file")  # before the model: a bad file costs nothing
    folder, cfg = resolve_model(args.target)
    train_file = args.train_file or (cfg.data.train_file if cfg is not None else None)
    train = K.read_quads(train_file, "train_file") if train_file else None
    known = list(train or [])
    if cfg is not None and cfg.data.validation_file and \
            Path(cfg.data.validation_file).resolve() != Path(args.test_file).resolve():
        known += K.read_quads(cfg.data.validation_file, "validation_file")
    plan = K.plan_ranking(test, args.mode, known=known, entities=K.entities_of(known), neg_k=args.neg_k,
                          max_queries=args.max_queries, seed=args.seed)
    model, tokenizer = load_model(folder, args.device, cfg)
    options = K.ScoringOptions(t_eval=args.t_eval, seed=args.seed, batch_size=args.batch_size, amp=args.amp,
                               reduce=args.reduce)
    result = K.evaluate(model, tokenizer, plan, train, options, progress=not args.no_progress)
    n_cands = sum(len(c) for c in plan.candidates)
    candidates = (f"{args.neg_k} sampled negatives + the answer" if args.neg_k else "every entity") + \
        f" ({n_cands / max(len(plan.queries), 1):.1f} a query on average), time-aware filtered " \
        f"({plan.filtered_out} other true answers removed)"
    if args.json:
        print(json.dumps({"model": str(folder), "test_file": args.test_file, "mode": args.mode,
                          "queries": len(plan.queries), "candidates": candidates, "scoring": result.scoring,
                          "metrics": result.metrics, "by_mode": result.by_mode,
                          "baselines": {k: v for k, v in K.BASELINES.items() if k in result.metrics}}))
        return 0
    print(f"kg-rank: {folder}")
    print(f"  {len(plan.queries)} queries ({args.mode}) from {args.test_file}")
    print(f"  candidates: {candidates}")
    print(f"  scoring: {result.scoring}")
    print(_table(result.metrics, result.by_mode))
    if train is None:
        print("  (no training quads: give --train_file for the frequency and recurrence baselines)")
    return 0


def _table(metrics: dict, by_mode: dict) -> str:
    rows = [("model", metrics["model"])]
    if len(by_mode) > 1:
        rows += [(f"  model, {m}", v) for m, v in by_mode.items()]
    rows += [(name, v) for name, v in metrics.items() if name != "model"]
    cols = list(metrics["model"])
    lines = [f"  {'':<16}" + "".join(f"{c:>10}" for c in cols)]
    for name, v in rows:
        lines.append(f"  {name:<16}" + "".join(f"{v[c]:>10.2f}" if c == "MR" else f"{v[c]:>10.4f}" for c in cols))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s tess-eval %(levelname)s %(message)s", "%H:%M:%S"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    try:
        args = _parser().parse_args(argv)
        if args.command != "kg-rank":
            raise ConfigError("usage: tess-eval kg-rank CONFIG_OR_CHECKPOINT --test_file F [--mode head|tail|both]")
        return kg_rank(args)
    except SyncdError as e:
        print(f"tess-eval: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("tess-eval: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
