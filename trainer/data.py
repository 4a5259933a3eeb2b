"""Line-by-line text into (input_ids, attention_mask, span_mask) examples.

``span_mask`` marks the positions the model generates; everything else is context
that the model sees clean. One function per conditional mode decides it:

    none            every real token (unconditional generation)
    prefix_lm       a random suffix of each line
    span_infilling  T5-style spans: 15% of tokens, spans of mean length 3
    kg_quad         the head and tail entities of ``head<TAB>relation<TAB>tail<TAB>date``
                    quads, several per line joined by " ||| "

Random masks are drawn once per example from a generator seeded by the config's
seed and the line's index, so they are part of the cached tokenised dataset and a
resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

CONDITIONAL_MODES = ("prefix_lm", "span_infilling", "kg_quad")
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


def prefix_lm_mask(content: Sequence[bool], rng: random.Random) -> list[bool]:
    """Generate a random non-empty suffix of the content tokens (True in ``content``)."""
    idx = [i for i, c in enumerate(content) if c]
    out = [False] * len(content)
    if not idx:
        return out
    cut = rng.randrange(len(idx))  # keep 0 .. len-1 content tokens as the prefix
    for i in idx[cut:]:
        out[i] = True
    return out


def span_infilling_mask(content: Sequence[bool], rng: random.Random, ratio: float = 0.15,
                        mean_span_length: float = 3.0) -> list[bool]:
    """T5-style noise spans over the content tokens: about ``ratio`` of them, in spans.

    As in T5's ``random_spans_noise_mask``: split the noise and non-noise token counts
    into the same number of random positive segments and interleave them.
    """
    idx = [i for i, c in enumerate(content) if c]
    out = [False] * len(content)
    n = len(idx)
    if n < 2:
        if n == 1:
            out[idx[0]] = True
        return out
    num_noise = min(max(int(round(n * ratio)), 1), n - 1)
    num_spans = max(min(int(round(num_noise / mean_span_length)), num_noise, n - num_noise), 1)

    def segments(total: int) -> list[int]:
        cuts = sorted(rng.sample(range(1, total), num_spans - 1)) if num_spans > 1 else []
        bounds = [0, *cuts, total]
        return [b - a for a, b in zip(bounds, bounds[1:], strict=False)]

    noise, keep = segments(num_noise), segments(n - num_noise)
    pos = 0
    for k_len, n_len in zip(keep, noise, strict=True):
        pos += k_len
        for j in range(pos, pos + n_len):
            out[idx[j]] = True
        pos += n_len
    return out


def build_span_mask(mode: str | None, line: str, offsets: Sequence[tuple[int, int]],
                    special: Sequence[int], rng: random.Random, ratio: float, mean_span_length: float) -> list[bool]:
    """The positions to generate for one tokenised line (before padding)."""
    content = [not s for s in special]
    if mode is None:
        return [True] * len(offsets)  # unconditional: the whole sequence, <s> and </s> included
    if mode == "prefix_lm":
        return prefix_lm_mask(content, rng)
    if mode == "span_infilling":
        return span_infilling_mask(content, rng, ratio, mean_span_length)
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
        }
