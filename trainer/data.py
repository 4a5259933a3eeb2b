"""Line-by-line text into (input_ids, attention_mask, span_mask) examples.

``span_mask`` marks the positions the model generates; everything else is context
that the model sees clean. One function per conditional mode decides it:

    none            every real token (unconditional generation)
    prefix_lm       all but a random prefix of each line (<s> and the prefix stay context)
    span_infilling  T5-style spans: 15% of tokens, spans of mean length 3
    kg_quad         the head and tail entities of ``head<TAB>relation<TAB>tail<TAB>date``
                    quads, several per line joined by " ||| "

kg_quad and unconditional masks are fixed, stored with the tokenised dataset. The
prefix_lm and span_infilling masks are drawn afresh for every batch, as the original
(allenai/tess-diffusion 63f039b, sdlm/data/preprocessors.py) draws them in its
collator: ``SpanMasking.apply`` draws them at the training step from torch's CPU
generator, which every checkpoint saves, so a resumed run draws exactly the masks an
uninterrupted one would. At evaluation prefix_lm keeps a fixed prefix: half the
line, or ``eval_context_size`` tokens.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

CONDITIONAL_MODES = ("prefix_lm", "span_infilling", "kg_quad")
BATCH_MASK_MODES = ("prefix_lm", "span_infilling")  # masks drawn for every batch
QUAD_SEPARATOR = " ||| "
QUAD_FIELD_SEPARATOR = "\t"
ENTITY_FIELDS = (0, 2)  # head and tail of (head, relation, tail, date)


def kg_entity_char_spans(line: str) -> list[tuple[int, int]]:
    """Character spans of the head and tail of every well-formed quad in ``line``."""
    spans = []
    start = 0
    for quad in line.split(QUAD_SEPARATOR):
        fields = quad.split(QUAD_FIELD_SEPARATOR)
        if len(fields) == 4:
            pos = start
            for i, field in enumerate(fields):
                if i in ENTITY_FIELDS and field.strip():
                    lead = len(field) - len(field.lstrip())
                    spans.append((pos + lead, pos + len(field.rstrip())))
                pos += len(field) + len(QUAD_FIELD_SEPARATOR)
        start += len(quad) + len(QUAD_SEPARATOR)
    return spans


def mask_from_char_spans(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[bool]:
    """True for every token whose characters overlap one of ``spans``; special tokens are (0, 0)."""
    return [e > s and any(s < se and e > ss for ss, se in spans) for s, e in offsets]


def build_span_mask(mode: str | None, line: str, offsets: Sequence[tuple[int, int]],
                    special: Sequence[int], rng: random.Random, ratio: float, mean_span_length: float) -> list[bool]:
    """The positions to generate for one tokenised line (before padding)."""
    if mode is None:
        return [True] * len(offsets)  # unconditional: the whole sequence, <s> and </s> included
    if mode in BATCH_MASK_MODES:
        return [True] * len(offsets)  # drawn per batch; stored: every real token is a candidate
    if mode == "kg_quad":
        return mask_from_char_spans(offsets, kg_entity_char_spans(line))
    raise ValueError(f"unknown conditional_generation mode {mode!r}")


def tokenize_function(tokenizer, mode: str | None, max_seq_length: int, pad_to_max_length: bool, seed: int,
                      ratio: float, mean_span_length: float):
    """A ``datasets.map(batched=True, with_indices=True)`` function for one mode."""

    def tokenize(batch, indices):
        enc = tokenizer(
            batch["text"],
            truncation=True,
            max_length=max_seq_length,
            padding="max_length" if pad_to_max_length else False,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
        span_masks = []
        for i, line in enumerate(batch["text"]):
            rng = random.Random(seed * 1_000_003 + indices[i])
            special = enc["special_tokens_mask"][i]
            mask = build_span_mask(mode, line, enc["offset_mapping"][i], special, rng, ratio, mean_span_length)
            attn = enc["attention_mask"][i]
            span_masks.append([int(m and a) for m, a in zip(mask, attn, strict=True)])
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "span_mask": span_masks}

    return tokenize


def load_text_datasets(train_file: str | None, validation_file: str | None, cache_dir: str | None):
    """The two text files as a ``datasets.DatasetDict`` (one example per non-empty line)."""
    from datasets import load_dataset

    files = {}
    if train_file:
        files["train"] = train_file
    if validation_file:
        files["validation"] = validation_file
    try:
        raw = load_dataset("text", data_files=files, cache_dir=cache_dir)
    except Exception as e:  # datasets wraps the reader's error in its own
        cause: BaseException | None = e
        while cause is not None and not isinstance(cause, UnicodeDecodeError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        from syncd.errors import ConfigError

        for split, path in files.items():  # an error path: reading the files again to name one is fine
            try:
                with open(path, encoding="utf-8") as fh:
                    for _ in fh:
                        pass
            except UnicodeDecodeError as bad:
                raise ConfigError(f"{split}_file {path} is not UTF-8 text ({bad.reason})") from None
        raise ConfigError(f"the text files are not UTF-8 text ({cause.reason})") from None
    return raw.filter(lambda ex: bool(ex["text"].strip()), desc="drop empty lines")


def prepare_dataset(raw, tokenizer, *, mode: str | None, max_seq_length: int, pad_to_max_length: bool,
                    seed: int, max_samples: int | None, ratio: float, mean_span_length: float,
                    num_proc: int | None = None, overwrite_cache: bool = False):
    """Tokenise (cached by ``datasets``), build span masks, drop lines with nothing to generate."""
    if max_samples is not None:
        raw = raw.select(range(min(max_samples, len(raw))))
    fn = tokenize_function(tokenizer, mode, max_seq_length, pad_to_max_length, seed, ratio, mean_span_length)
    ds = raw.map(fn, batched=True, with_indices=True, remove_columns=raw.column_names, num_proc=num_proc,
                 load_from_cache_file=not overwrite_cache, desc="tokenise")
    return ds.filter(lambda ex: any(ex["span_mask"]), desc="drop lines with nothing to generate",
                     load_from_cache_file=not overwrite_cache)


class Collator:
    """Pads a list of examples to the longest one (already equal when padded to max length)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(ex["input_ids"]) for ex in examples)

        def pad(key: str, value: int) -> torch.Tensor:
            return torch.tensor([list(ex[key]) + [value] * (length - len(ex[key])) for ex in examples])

        return {
            "input_ids": pad("input_ids", self.pad_token_id),  # (B, L)
            "attention_mask": pad("attention_mask", 0),  # (B, L)
            "span_mask": pad("span_mask", 0).bool(),  # (B, L): positions to generate
            "lengths": torch.tensor([len(ex["input_ids"]) for ex in examples]),  # (B,): stored, pads included
        }


# ---- masks drawn per batch, as the original's collator -----------------------------------


def prefix_lm_batch_mask(lengths: torch.Tensor, width: int, generator: torch.Generator | None = None,
                         evaluating: bool = False, eval_context_size: int | None = None) -> torch.Tensor:
    """The original's ``gpt_span_mask`` for each row.  lengths (B,), width L -> (B, L) bool

    <s> and a prefix of p tokens stay context, the rest of the row's ``length`` is generated:
    p uniform in [1, (length - 1) // 2) in training (1 below length 5); at evaluation
    ``eval_context_size - 1``, or (length - 1) // 2.
    """
    out = torch.zeros((len(lengths), width), dtype=torch.bool)
    for i, length in enumerate(lengths.tolist()):
        if evaluating:
            prefix = eval_context_size - 1 if eval_context_size is not None else (length - 1) // 2
        else:
            high = (length - 1) // 2
            prefix = int(torch.randint(1, high, (), generator=generator)) if length >= 5 and high > 1 else 1
        out[i, 1 + prefix:length] = True
    return out


def _random_segmentation(num_items: int, num_segments: int, generator: torch.Generator | None) -> list[int]:
    """num_items split into num_segments random positive parts, all splits equally likely."""
    if num_segments <= 1:
        return [num_items]
    cuts = (torch.randperm(num_items - 1, generator=generator)[: num_segments - 1] + 1).sort().values.tolist()
    bounds = [0, *cuts, num_items]
    return [b - a for a, b in zip(bounds, bounds[1:], strict=False)]


def span_infilling_batch_mask(lengths: torch.Tensor, width: int, ratio: float = 0.15, mean_span_length: float = 3.0,
                              generator: torch.Generator | None = None) -> torch.Tensor:
    """The original's ``t5_random_spans_mask`` for each row.  lengths (B,), width L -> (B, L) bool

    round down(length * ratio) tokens (at least 1, at most length - 1) in
    max(1, int(that / mean_span_length)) spans, alternating with as many unmasked runs,
    starting unmasked; <s> and </s> are not protected, as in the original.
    """
    out = torch.zeros((len(lengths), width), dtype=torch.bool)
    for i, orig_length in enumerate(lengths.tolist()):
        length = max(orig_length, 2)
        num_mask = min(max(int(length * ratio), 1), length - 1)
        num_spans = max(int(num_mask / mean_span_length), 1)
        masked = _random_segmentation(num_mask, num_spans, generator)
        kept = _random_segmentation(length - num_mask, num_spans, generator)
        row: list[bool] = []
        for k, m in zip(kept, masked, strict=True):
            row += [False] * k + [True] * m
        out[i, :orig_length] = torch.tensor(row[:orig_length], dtype=torch.bool)
    return out


@dataclass(frozen=True)
class SpanMasking:
    """What a batch generates, decided at each step: per-batch masks, truncation, pads."""

    mode: str | None = None
    ratio: float = 0.15
    mean_span_length: float = 3.0
    eval_context_size: int | None = None
    # Pads out of attention and never generated; false is the original's (attention_mask None,
    # a mask over the stored length, pads included when padded to max length).
    mask_padding: bool = True
    truncation_length: int = 0  # the original drops this many tokens from the end of each batch

    def apply(self, batch: dict, generator: torch.Generator | None = None, evaluating: bool = False) -> dict:
        """input_ids, span_mask and attention_mask (None without mask_padding) for one batch."""
        ids, attn, span = batch["input_ids"], batch["attention_mask"], batch["span_mask"].bool()
        if self.mode in BATCH_MASK_MODES:
            real = attn.sum(dim=1).cpu()
            stored = batch.get("lengths")
            lengths = real if self.mask_padding or stored is None else stored.cpu()
            if self.mode == "prefix_lm":
                span = prefix_lm_batch_mask(lengths, ids.shape[1], generator, evaluating, self.eval_context_size)
            else:
                span = span_infilling_batch_mask(lengths, ids.shape[1], self.ratio, self.mean_span_length, generator)
            span = span.to(ids.device)
        elif self.mode is None and not self.mask_padding:
            span = torch.ones_like(span)  # the original's unconditional loss covers every position
        if self.truncation_length > 0:
            cut = ids.shape[1] - self.truncation_length
            ids, attn, span = ids[:, :cut], attn[:, :cut], span[:, :cut]
        return {"input_ids": ids, "span_mask": span, "attention_mask": attn if self.mask_padding else None}
