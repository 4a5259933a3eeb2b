"""The original TESS's generation metrics, on the texts an evaluation generates.

    dist-n       per text: distinct n-grams of whitespace words / number of words, averaged (n = 1..4)
    repetition   share of texts that end by repeating a phrase: a phrase of 3 or more tokens
                 at least twice, or a shorter one more than 50 times (Holtzman et al.'s rule)
    zipf         the slope (and correlation) of log count against log rank of the token
                 counts, over the 5000 most frequent tokens; ``zipf_minus_a`` is the reported one
    perplexity   exp of the mean next-token loss of each text under a causal LM
                 (``eval_perplexity_model``), with its BOS token first; the mean over texts

Written from the definitions in allenai/tess-diffusion (sdlm/metrics, commit 63f039b),
which follow Holtzman et al.'s ``degen`` scripts and the ``evaluate`` perplexity; numpy
only (no nltk or scipy).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence

logger = logging.getLogger("tessync.trainer")

REPETITION_MAX_N = 90  # the longest phrase looked for
ZIPF_TOP = 5000


def distinct_n(texts: Sequence[str], n_max: int = 4) -> dict[str, float]:
    out = {}
    for n in range(1, n_max + 1):
        values = []
        for text in texts:
            words = text.split()
            grams = {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}
            values.append(len(grams) / len(words) if words else 0.0)
        out[f"dist-{n}"] = sum(values) / len(values) if values else math.nan
    return out


def repeats_at_end(tokens: Sequence[int], max_n: int = REPETITION_MAX_N) -> bool:
    """Does the text end in a repeated phrase (see the module docstring)?"""
    rev = list(reversed(tokens))
    best_n, best_times = 0, 0
    for n in range(1, max_n + 1):
        times = 1
        while rev[n * times:n * (times + 1)] == rev[:n] and len(rev[n * times:n * (times + 1)]) == n:
            times += 1
        if times > best_times:  # the shortest phrase wins a tie, as in the original's max()
            best_n, best_times = n, times
    return best_times > 1 and (best_n >= 3 or best_times > 50)


def repetition(token_lists: Sequence[Sequence[int]], end_id: int | None = None) -> float:
    """Share of texts ending in a repetition; a trailing ``end_id`` is ignored."""
    if not token_lists:
        return math.nan
    hits = 0
    for tokens in token_lists:
        tokens = list(tokens)
        if tokens and end_id is not None and tokens[-1] == end_id:
            tokens.pop()
        hits += repeats_at_end(tokens)
    return hits / len(token_lists)


def zipf(token_lists: Sequence[Sequence[int]], top: int = ZIPF_TOP) -> dict[str, float]:
    """Least-squares fit of log(count) = a * log(rank) + b over the ``top`` most frequent tokens."""
    import numpy as np

    counts = Counter(t for tokens in token_lists for t in tokens)
    ys = np.array(sorted(counts.values(), reverse=True)[:top], dtype=np.float64)
    if len(ys) < 2:
        return {"zipf_minus_a": math.nan, "zipf_minus_r": math.nan}
    x, y = np.log(np.arange(1, len(ys) + 1)), np.log(ys)
    a = float(np.polyfit(x, y, 1)[0])
    r = float(np.corrcoef(x, y)[0, 1]) if y.std() > 0 else math.nan
    return {"zipf_minus_a": -a, "zipf_minus_r": -r}


def perplexities(texts: Sequence[str], model, tokenizer, batch_size: int = 16) -> list[float]:
    """Each text's perplexity under a causal LM, its BOS token prepended (so the first word counts)."""
    import torch

    device = next(model.parameters()).device
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if bos is None:
        raise ValueError("the perplexity model's tokenizer has neither a BOS nor an EOS token")
    out = []
    model.eval()
    for start in range(0, len(texts), batch_size):
        chunk = [t for t in texts[start:start + batch_size]]
        seqs = [[bos, *tokenizer(t, add_special_tokens=False)["input_ids"]] for t in chunk]
        seqs = [s[:getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings",
                                                                          len(s))] for s in seqs]
        width = max(len(s) for s in seqs)
        ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        ids, mask = ids.to(device), mask.to(device)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()  # (B, L, V)
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
        keep = mask[:, 1:].float()
        per_text = (nll * keep).sum(1) / keep.sum(1).clamp(min=1)
        out.extend(torch.exp(per_text).where(keep.sum(1) > 0, torch.full_like(per_text, math.nan)).cpu().tolist())
    return out


class SampleMetrics:
    """The metrics above on an evaluation's generated spans, as ``{prefix}_dist-1`` and so on."""

    def __init__(self, tokenizer, perplexity_model: str | None = None):
        self.tokenizer = tokenizer
        self.perplexity_model = perplexity_model
        self._lm = self._load(perplexity_model) if perplexity_model else None  # at start-up: fail before step one

    @staticmethod
    def _load(name: str):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from syncd.errors import ConfigError

        try:
            tok = AutoTokenizer.from_pretrained(name)
            lm = AutoModelForCausalLM.from_pretrained(name)
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"cannot load eval_perplexity_model {name}: {first}") from None
        return lm, tok

    def __call__(self, predicted, span_mask, prefix: str = "eval") -> dict[str, float]:
        """predicted (B, L) ids, span_mask (B, L): the generated positions of each sample."""
        token_lists = [predicted[i][span_mask[i].bool()].tolist() for i in range(predicted.shape[0])]
        texts = [self.tokenizer.decode(t, skip_special_tokens=True) for t in token_lists]
        out = {f"{prefix}_{k}": v for k, v in distinct_n(texts).items()}
        out[f"{prefix}_repetition"] = repetition(token_lists, self.tokenizer.eos_token_id)
        out.update({f"{prefix}_{k}": v for k, v in zipf(token_lists).items()})
        if self._lm is not None:
            lm, tok = self._lm
            lm.to(predicted.device)
            scored = [t for t in texts if t.strip()]
            ppl = perplexities(scored, lm, tok) if scored else []
            finite = [p for p in ppl if math.isfinite(p)]
            out[f"{prefix}_perplexity"] = sum(finite) / len(finite) if finite else math.nan
        return out


def eval_hook(cfg, tokenizer) -> SampleMetrics | None:
    d = cfg.diffusion
    if not (d.eval_text_metrics or d.eval_perplexity_model):
        return None
    return SampleMetrics(tokenizer, d.eval_perplexity_model)
