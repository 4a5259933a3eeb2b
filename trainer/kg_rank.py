"""Temporal knowledge-graph link prediction with a TESS model: MR, MRR and Hits@k.

A test quad ``(head, relation, tail, date)`` asks two questions: which tail, given
``(head, relation, ?, date)``, and which head, given ``(?, relation, tail, date)``.
Every candidate entity is written into the quad's own text (``head<TAB>relation<TAB>
tail<TAB>date``, the training format) and scored by the model's one-step denoising
loss of the candidate's span: the span is noised to a fixed timestep t (60 of 500 by
default, as in the fork's ``eval_kg_ranking.py``), the rest of the quad stays clean,
and the score is the mean (or sum) of the log-probabilities the model gives the
candidate's tokens.
All candidates of one query share the same noise (one seed per query), so they are
compared under the same draw.

Filtering is time-aware: a candidate that forms another known true fact at the same
date (``(head, relation, candidate, date)`` in the test, training or validation
quads) is removed, so a model is never punished for naming another right answer.

Ranks are exact under ties: when the answer's score equals e other candidates' and g
score higher, every position g+1 .. g+1+e is equally likely (random tie-breaking), and
MR, MRR and Hits@k are the expectations over them. With that rule the random baseline
needs no random numbers: it is every candidate tied. Two count baselines read the
*training* quads only (never the test file, which would leak the answers):
``frequency``, how often the candidate answers the relation, and ``recurrence``, how
often the very fact (known entity, relation, candidate) occurs (the fork's "freq").

The timestep matters: at t = 60 of 500 the candidate's own tokens are barely noised,
so the loss mostly measures how well the model copies them; near t = N the span is
pure noise and the score is the model's prediction from the context alone.

Nothing here writes files; ``eval_cli.py`` is the command line.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from syncd.errors import ConfigError

logger = logging.getLogger("tessync.trainer")

QUAD_SEPARATOR = " ||| "
FIELD_SEPARATOR = "\t"
MODES = ("head", "tail")
DEFAULT_T_EVAL = 60  # the fork's default: low noise, where a one-step loss still separates candidates
DEFAULT_KS = (1, 3, 10)

Quad = tuple[str, str, str, str]  # (head, relation, tail, date)


# ---- reading quads ----------------------------------------------------------------

def parse_quad_line(line: str, where: str) -> list[Quad]:
    """One line of one or more quads joined by `` ||| ``; a malformed one is a ConfigError."""
    out = []
    for part in line.split(QUAD_SEPARATOR):
        fields = [f.strip() for f in part.strip("\n").split(FIELD_SEPARATOR)]
        if len(fields) != 4 or not all(fields):
            raise ConfigError(f"{where}: not a quad (head<TAB>relation<TAB>tail<TAB>date): {part.strip()[:80]!r}")
        out.append((fields[0], fields[1], fields[2], fields[3]))
    return out


def read_quads(path: str | Path, what: str = "test_file") -> list[Quad]:
    """Every quad of a one-line-per-example file, in file order; empty lines are skipped."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{what} not found: {path}")
    quads: list[Quad] = []
    try:
        with open(p, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    quads.extend(parse_quad_line(line, f"{what} {path} line {number}"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {path} is not UTF-8 text ({e.reason})") from None
    if not quads:
        raise ConfigError(f"{what} {path} has no quads")
    return quads


# ---- queries, filtering, candidates -------------------------------------------------

@dataclass(frozen=True)
class Query:
    quad: Quad
    mode: str  # "head" or "tail": which entity is asked for

    @property
    def answer(self) -> str:
        return self.quad[0] if self.mode == "head" else self.quad[2]

    @property
    def key(self) -> tuple[str, str, str, str]:
        """(mode, the known entity, relation, date): what the question gives."""
        h, r, t, d = self.quad
        return (self.mode, t if self.mode == "head" else h, r, d)

    def text_with(self, entity: str) -> tuple[str, tuple[int, int]]:
        """The quad's training-format text with ``entity`` asked for, and the entity's character span."""
        h, r, t, d = self.quad
        if self.mode == "head":
            text = FIELD_SEPARATOR.join((entity, r, t, d))
            return text, (0, len(entity))
        start = len(h) + len(r) + 2 * len(FIELD_SEPARATOR)
        return FIELD_SEPARATOR.join((h, r, entity, d)), (start, start + len(entity))


def make_queries(quads: Sequence[Quad], mode: str) -> list[Query]:
    """``mode`` head, tail or both (tail questions first, then head, each in file order)."""
    if mode not in (*MODES, "both"):
        raise ConfigError(f"--mode must be head, tail or both, not {mode!r}")
    modes = ("tail", "head") if mode == "both" else (mode,)
    return [Query(q, m) for m in modes for q in quads]


def true_answers(known: Iterable[Quad]) -> dict[tuple[str, str, str, str], set[str]]:
    """Query key -> every entity that makes a known fact at that date (the time-aware filter)."""
    index: dict[tuple[str, str, str, str], set[str]] = defaultdict(set)
    for h, r, t, d in known:
        index[("tail", h, r, d)].add(t)
        index[("head", t, r, d)].add(h)
    return index


def entities_of(quads: Iterable[Quad]) -> list[str]:
    return sorted({q[0] for q in quads} | {q[2] for q in quads})


def candidates_for(query: Query, entities: Sequence[str], answers: dict, neg_k: int | None,
                   rng: random.Random | None = None) -> tuple[list[str], int]:
    """The answer first, then the filtered others: all of them, or ``neg_k`` drawn without replacement.

    Returns the candidate list and how many entities the filter removed.
    """
    others_true = answers.get(query.key, set()) - {query.answer}
    pool = [e for e in entities if e != query.answer and e not in others_true]
    removed = sum(1 for e in entities if e in others_true)
    if neg_k is not None and neg_k < len(pool):
        pool = (rng or random.Random(0)).sample(pool, neg_k)
    return [query.answer, *pool], removed


# ---- ranks under ties, and the metrics ----------------------------------------------

@dataclass(frozen=True)
class Rank:
    """The answer's standing: ``better`` candidates scored higher, ``tied`` others scored the same."""

    better: int
    tied: int

    @property
    def positions(self) -> range:
        return range(self.better + 1, self.better + self.tied + 2)

    @property
    def mean(self) -> float:
        return self.better + 1 + self.tied / 2

    @property
    def reciprocal(self) -> float:
        return sum(1 / r for r in self.positions) / (self.tied + 1)

    def hits(self, k: int) -> float:
        return sum(1 for r in self.positions if r <= k) / (self.tied + 1)


def rank_of(scores: Sequence[float]) -> Rank:
    """``scores[0]`` is the answer's; higher is better. NaN counts as the worst score."""
    def clean(x: float) -> float:
        return -math.inf if math.isnan(x) else x

    gold = clean(scores[0])
    rest = [clean(s) for s in scores[1:]]
    return Rank(better=sum(1 for s in rest if s > gold), tied=sum(1 for s in rest if s == gold))


def summarize(ranks: Sequence[Rank], ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """MR, MRR and Hits@k (fractions), each the mean over queries of its tie-aware expectation."""
    n = len(ranks)
    if n == 0:
        return {"MR": math.nan, "MRR": math.nan, **{f"Hits@{k}": math.nan for k in ks}}
    out = {"MR": sum(r.mean for r in ranks) / n, "MRR": sum(r.reciprocal for r in ranks) / n}
    for k in ks:
        out[f"Hits@{k}"] = sum(r.hits(k) for r in ranks) / n
    return out


# ---- baselines ----------------------------------------------------------------------

def frequency_counts(train: Iterable[Quad]) -> Counter:
    """Training-quad counts for both count baselines (dates ignored).

    ``("frequency", mode, relation, answer)``: how often the entity answers this relation's
    question in this direction; ``("recurrence", mode, known, relation, answer)``: how often
    the very fact (known entity, relation, answer) occurs, the fork's "freq" scorer.
    """
    counts: Counter = Counter()
    for h, r, t, _ in train:
        counts[("frequency", "tail", r, t)] += 1
        counts[("frequency", "head", r, h)] += 1
        counts[("recurrence", "tail", h, r, t)] += 1
        counts[("recurrence", "head", t, r, h)] += 1
    return counts


def count_scores(kind: str, query: Query, candidates: Sequence[str], counts: Counter) -> list[float]:
    mode, known, relation, _ = query.key
    if kind == "frequency":
        return [float(counts[("frequency", mode, relation, c)]) for c in candidates]
    return [float(counts[("recurrence", mode, known, relation, c)]) for c in candidates]


BASELINES = {
    "random": "every candidate tied (the exact expectation of a random order)",
    "frequency": "how often the candidate answers the relation in the training quads",
    "recurrence": "how often (known entity, relation, candidate) occurs in the training quads (the fork's freq)",
}


# ---- the whole evaluation, for any scorer --------------------------------------------

@dataclass
class RankingPlan:
    """The queries and each one's candidate list (answer first), fixed before any scoring."""

    queries: list[Query]
    candidates: list[list[str]]
    filtered_out: int = 0  # entities removed by the time-aware filter, over all queries
    notes: list[str] = field(default_factory=list)


def plan_ranking(test: Sequence[Quad], mode: str, *, known: Iterable[Quad] = (), entities: Iterable[str] = (),
                 neg_k: int | None = None, max_queries: int | None = None, seed: int = 42) -> RankingPlan:
    """Queries from ``test`` (at most ``max_queries``, a seeded sample kept in file order) and their candidates.

    ``known``: further true quads for the filter (training, validation); the test quads
    always count. ``entities``: further candidate entities; the test's always count.
    """
    if neg_k is not None and neg_k < 1:
        raise ConfigError(f"--neg_k must be at least 1 (or left out for all entities), not {neg_k}")
    if max_queries is not None and max_queries < 1:
        raise ConfigError(f"--max_queries must be at least 1, not {max_queries}")
    known = list(known)
    queries = make_queries(test, mode)
    if max_queries is not None and max_queries < len(queries):
        keep = sorted(random.Random(seed).sample(range(len(queries)), max_queries))
        queries = [queries[i] for i in keep]
    answers = true_answers([*test, *known])
    pool = sorted(set(entities) | set(entities_of(test)))
    plan = RankingPlan(queries, [])
    for i, q in enumerate(queries):
        rng = random.Random(seed * 1_000_003 + i)
        cands, removed = candidates_for(q, pool, answers, neg_k, rng)
        plan.candidates.append(cands)
        plan.filtered_out += removed
    return plan


def rank_all(plan: RankingPlan, scores: Sequence[Sequence[float]]) -> list[Rank]:
    if len(scores) != len(plan.queries):
        raise ValueError(f"{len(scores)} score lists for {len(plan.queries)} queries")
    return [rank_of(s) for s in scores]


def baseline_scores(plan: RankingPlan, train: Sequence[Quad] | None) -> dict[str, list[list[float]]]:
    """``random`` always; ``frequency`` and ``recurrence`` given training quads (see BASELINES)."""
    out = {"random": [[0.0] * len(c) for c in plan.candidates]}
    if train is not None:
        counts = frequency_counts(train)
        for kind in ("frequency", "recurrence"):
            out[kind] = [count_scores(kind, q, c, counts) for q, c in zip(plan.queries, plan.candidates,
                                                                            strict=True)]
    return out


# ---- the TESS scorer ----------------------------------------------------------------

@dataclass(frozen=True)
class ScoringOptions:
    t_eval: int = DEFAULT_T_EVAL  # the fixed timestep, of the model's num_diffusion_steps
    seed: int = 42  # query i's noise comes from seed * 1_000_003 + i
    batch_size: int = 64  # candidate texts per forward pass
    amp: bool = False  # fp16 autocast, CUDA only
    reduce: str = "mean"  # over the candidate's tokens: "mean" (the fork's) or "sum" (a joint log-prob)


def describe(options: ScoringOptions, num_steps: int) -> str:
    return (f"one-step denoising at t = {options.t_eval} of {num_steps}, noise seed {options.seed} "
            f"(+ query index) shared by a query's candidates, score = {options.reduce} log-prob over the "
            f"candidate's tokens")


def scoring_alpha_bar(config, t: int) -> float:
    """alpha_bar(t) of the schedule the model was trained with (its config's beta_schedule;
    models saved before the key existed were trained with the cosine one)."""
    from .schedule import alpha_bars

    schedule = getattr(config, "beta_schedule", None) or "squaredcos_improved_ddpm"
    return float(alpha_bars(schedule, int(config.num_diffusion_steps))[t])


def tess_scores(model, tokenizer, plan: RankingPlan, options: ScoringOptions, progress: bool = True,
                desc: str = "kg-rank") -> list[list[float]]:
    """The model's score of every candidate of every query (see the module docstring).

    Candidates are batched across queries in order; each query's noise (rows, V) is
    drawn once on the CPU, so CPU and GPU see the same numbers.
    """
    import torch

    from .schedule import scaled_timesteps

    config = model.config
    num_steps = int(getattr(config, "num_diffusion_steps", 0) or 0)
    if num_steps < 1:
        raise ConfigError("the model's config has no num_diffusion_steps: is it a TESS model?")
    if not 0 <= options.t_eval < num_steps:
        raise ConfigError(f"--t_eval must be in [0, {num_steps}) for this model, not {options.t_eval}")
    k = float(getattr(config, "simplex_value", 5.0))
    vocab = config.vocab_size
    device = next(model.parameters()).device
    if options.reduce not in ("mean", "sum"):
        raise ConfigError(f"--reduce must be mean or sum, not {options.reduce!r}")
    if options.amp and device.type != "cuda":
        raise ConfigError("--amp needs a CUDA device")
    alpha = scoring_alpha_bar(config, options.t_eval)
    signal, noise_scale = math.sqrt(alpha) * k, math.sqrt(1 - alpha) * k
    t_scaled = float(scaled_timesteps(torch.tensor([options.t_eval]), num_steps)[0])

    # Tokenise every candidate text once, with its span mask.
    items: list[tuple[int, list[int], list[bool]]] = []  # (query, ids, span mask)
    for qi, (q, cands) in enumerate(zip(plan.queries, plan.candidates, strict=True)):
        texts, spans = zip(*(q.text_with(c) for c in cands), strict=True)
        enc = tokenizer(list(texts), return_offsets_mapping=True, truncation=True,
                        max_length=config.max_position_embeddings - 2)
        for ids, offsets, (s, e) in zip(enc["input_ids"], enc["offset_mapping"], spans, strict=True):
            mask = [b > a and a < e and b > s for a, b in offsets]
            items.append((qi, ids, mask))
    widest: dict[int, int] = defaultdict(int)
    for qi, _, mask in items:
        widest[qi] = max(widest[qi], sum(mask))

    noise_cache: dict[int, torch.Tensor] = {}

    def noise_for(qi: int) -> torch.Tensor:
        if qi not in noise_cache:
            gen = torch.Generator().manual_seed(options.seed * 1_000_003 + qi)
            noise_cache.clear()  # batches run in query order: older queries are done
            noise_cache[qi] = torch.randn((max(widest[qi], 1), vocab), generator=gen).to(device)
        return noise_cache[qi]

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    flat: list[float] = []
    bar = _progress(len(items), desc, progress)
    model_was_training = model.training
    model.eval()
    try:
        for start in range(0, len(items), options.batch_size):
            chunk = items[start:start + options.batch_size]
            length = max(len(ids) for _, ids, _ in chunk)
            ids = torch.full((len(chunk), length), pad, dtype=torch.long)
            span = torch.zeros((len(chunk), length), dtype=torch.bool)
            attn = torch.zeros((len(chunk), length), dtype=torch.long)
            rows = []
            for b, (qi, seq, mask) in enumerate(chunk):
                ids[b, :len(seq)] = torch.tensor(seq)
                span[b, :len(mask)] = torch.tensor(mask)
                attn[b, :len(seq)] = 1
                rows.append(noise_for(qi)[:sum(mask)])
            ids, span, attn = ids.to(device), span.to(device), attn.to(device)
            labels = ids[span]  # (n,)
            x = torch.cat(rows).to(device) * noise_scale - signal  # (n, V)
            x.scatter_add_(-1, labels.unsqueeze(-1), torch.full_like(x[:, :1], 2 * signal))
            timesteps = torch.full((len(chunk),), t_scaled, device=device)
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=options.amp):
                logits = model(input_ids=ids, simplex=x, timesteps=timesteps, span_mask=span,
                               attention_mask=attn).logits  # (n, V)
            logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
            which = span.nonzero(as_tuple=True)[0]  # (n,): the sequence of each row
            total = torch.zeros(len(chunk), device=device).index_add_(0, which, logp)
            count = torch.zeros(len(chunk), device=device).index_add_(0, which, torch.ones_like(logp))
            value = total / count.clamp(min=1) if options.reduce == "mean" else total
            value = torch.where(count > 0, value, torch.full_like(total, -math.inf))  # no token: last
            flat.extend(value.cpu().tolist())
            bar.update(len(chunk))
    finally:
        bar.close()
        model.train(model_was_training)
    out: list[list[float]] = [[] for _ in plan.queries]
    for (qi, _, _), s in zip(items, flat, strict=True):
        out[qi].append(s)
    return out


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="cand", disable=not enabled, leave=False)


# ---- one call for the trainer's evaluation and the CLI -------------------------------

@dataclass
class RankingResult:
    plan: RankingPlan
    metrics: dict[str, dict[str, float]]  # scorer -> metrics; "model" first
    by_mode: dict[str, dict[str, float]]  # mode -> the model's metrics
    scoring: str


def evaluate(model, tokenizer, plan: RankingPlan, train: Sequence[Quad] | None, options: ScoringOptions,
             ks: Sequence[int] = DEFAULT_KS, progress: bool = True) -> RankingResult:
    scores = tess_scores(model, tokenizer, plan, options, progress)
    ranks = rank_all(plan, scores)
    metrics = {"model": summarize(ranks, ks)}
    for name, s in baseline_scores(plan, train).items():
        metrics[name] = summarize(rank_all(plan, s), ks)
    by_mode = {}
    for m in MODES:
        chosen = [r for r, q in zip(ranks, plan.queries, strict=True) if q.mode == m]
        if chosen:
            by_mode[m] = summarize(chosen, ks)
    return RankingResult(plan, metrics, by_mode, describe(options, int(model.config.num_diffusion_steps)))


# ---- the small version that runs at each evaluation of a kg_quad run ----------------

class EvalRanking:
    """kg-rank on a fixed sample of validation queries, as metrics ``{prefix}_kg_*``.

    Built once from the config (the quads are read and the candidates drawn here, so
    every evaluation ranks the very same lists); called by the trainer's evaluation.
    """

    def __init__(self, plan: RankingPlan, train: Sequence[Quad], options: ScoringOptions, progress: bool):
        self.plan = plan
        self.options = options
        self.progress = progress
        baselines = baseline_scores(plan, train)
        self.baselines = {name: summarize(rank_all(plan, s))["MRR"] for name, s in baselines.items()}

    def __call__(self, model, tokenizer, prefix: str = "eval") -> dict[str, float]:
        import torch

        device = next(model.parameters()).device
        amp = self.options.amp and device.type == "cuda" and torch.cuda.is_available()
        options = ScoringOptions(self.options.t_eval, self.options.seed, self.options.batch_size, amp,
                                 self.options.reduce)
        scores = tess_scores(model, tokenizer, self.plan, options, self.progress, desc="kg-rank (eval)")
        m = summarize(rank_all(self.plan, scores))
        out = {f"{prefix}_kg_mr": m["MR"], f"{prefix}_kg_mrr": m["MRR"]}
        out.update({f"{prefix}_kg_hits@{k}": m[f"Hits@{k}"] for k in DEFAULT_KS})
        out.update({f"{prefix}_kg_{name}_mrr": v for name, v in self.baselines.items()})
        logger.info("kg-rank at t = %d on %d validation queries: MRR %.4f (frequency %.4f, random %.4f)",
                    options.t_eval, len(self.plan.queries), m["MRR"], self.baselines.get("frequency", math.nan),
                    self.baselines["random"])
        return out


def eval_hook(cfg) -> EvalRanking | None:
    """The evaluation's kg-rank for a kg_quad run with a validation file, else None."""
    d, diffusion = cfg.data, cfg.diffusion
    queries = diffusion.eval_kg_rank_queries
    if d.conditional_generation != "kg_quad" or not d.validation_file or queries == 0:
        return None
    if queries < 0 or diffusion.eval_kg_rank_neg_k < 1:
        raise ConfigError("config keys eval_kg_rank_queries and eval_kg_rank_neg_k must be positive "
                          "(eval_kg_rank_queries 0 turns the evaluation's ranking off)")
    if not 0 <= diffusion.eval_kg_rank_t < diffusion.num_diffusion_steps:
        raise ConfigError(f"config key eval_kg_rank_t must be in [0, num_diffusion_steps "
                          f"{diffusion.num_diffusion_steps}), not {diffusion.eval_kg_rank_t}")
    train = read_quads(d.train_file, "train_file")
    test: list[Quad] = []
    with open(Path(d.validation_file).expanduser(), encoding="utf-8") as fh:
        lines = [ln for ln in fh if ln.strip()]
    if d.max_eval_samples is not None:
        lines = lines[:d.max_eval_samples]
    for number, line in enumerate(lines, 1):
        try:
            test.extend(parse_quad_line(line, f"validation_file {d.validation_file} line {number}"))
        except ConfigError:
            continue  # the trainer only masks well-formed quads; the ranking skips the others too
    if not test:
        raise ConfigError(f"validation_file {d.validation_file} has no well-formed quad to rank")
    seed = cfg.training.seed
    plan = plan_ranking(test, "both", known=train, entities=entities_of(train), neg_k=diffusion.eval_kg_rank_neg_k,
                        max_queries=queries, seed=seed)
    amp = bool(cfg.training.fp16 or cfg.training.bf16)
    options = ScoringOptions(t_eval=diffusion.eval_kg_rank_t, seed=seed, amp=amp)
    return EvalRanking(plan, train, options, progress=not cfg.training.disable_tqdm)
