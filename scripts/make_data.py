"""Generate the shipped synthetic ICEWS-style corpus and its byte-level BPE tokenizer.

    python scripts/make_data.py            # rewrite data/kg_quads/*.txt and data/tokenizer/
    python scripts/make_data.py --check    # fail if the shipped files differ from a fresh build

Layout written (all small, all committed)::

    data/kg_quads/train.txt        10,000 lines: the user's size (625 steps an epoch at batch 16)
    data/kg_quads/validation.txt   500 lines
    data/tokenizer/                vocab.json, merges.txt, tokenizer.json, tokenizer_config.json,
                                   special_tokens_map.json (a RoBERTa-style byte-level BPE)

Each line holds one to three temporal knowledge-graph quads, tab-separated
``head<TAB>relation<TAB>tail<TAB>date``, joined by `` ||| `` as in the user's
"oneline" data. The events are not random: every actor has a home country, each
relation prefers some actor roles, a line is a short chain of events about the
same actors, the day's country follows from the date, and partners come from a
fixed alliance table, so a model can learn to fill in the entities from the
context (the relation and the date).
"""

from __future__ import annotations

import argparse
import datetime as dt
import filecmp
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "data"
SEED = 20240301
TRAIN_LINES = 10_000
VALIDATION_LINES = 500
VOCAB_SIZE = 1024  # small: the tiny model's (batch, length, vocab) tensors stay cheap on CPU
SEPARATOR = " ||| "

COUNTRIES = [
    "Nigeria", "India", "France", "Iraq", "Brazil", "Japan", "Kenya", "Mexico", "Egypt",
    "Germany", "Turkey", "Pakistan", "Indonesia", "Ukraine", "Russia", "China", "Iran",
    "Israel", "Syria", "Colombia", "Philippines", "Thailand", "Ethiopia", "South Africa",
]
ROLES = ["Government", "Police", "Military", "Ministry", "Citizen", "Protester", "Media",
         "Business", "Court", "Opposition"]
PEOPLE = {  # named actors and their countries
    "Muhammadu Buhari": "Nigeria", "Narendra Modi": "India", "Francois Hollande": "France",
    "Haider al-Abadi": "Iraq", "Dilma Rousseff": "Brazil", "Shinzo Abe": "Japan",
    "Uhuru Kenyatta": "Kenya", "Enrique Pena Nieto": "Mexico", "Abdel Fattah Al-Sisi": "Egypt",
    "Angela Merkel": "Germany", "Recep Tayyip Erdogan": "Turkey", "Nawaz Sharif": "Pakistan",
    "Joko Widodo": "Indonesia", "Petro Poroshenko": "Ukraine", "Vladimir Putin": "Russia",
    "Xi Jinping": "China", "Hassan Rouhani": "Iran", "Benjamin Netanyahu": "Israel",
}
# relation -> (roles that tend to act, roles that tend to be acted on)
RELATIONS = {
    "Make statement": (["Government", "Ministry", "Media", "Opposition"], ["Citizen", "Media"]),
    "Consult": (["Government", "Ministry"], ["Government", "Ministry"]),
    "Express intent to cooperate": (["Government", "Ministry", "Business"], ["Government", "Business"]),
    "Criticize or denounce": (["Opposition", "Media", "Protester"], ["Government", "Police"]),
    "Host a visit": (["Government"], ["Government", "Ministry"]),
    "Make an appeal or request": (["Citizen", "Protester", "Opposition"], ["Government", "Court"]),
    "Engage in negotiation": (["Government", "Ministry"], ["Government", "Opposition"]),
    "Arrest, detain, or charge with legal action": (["Police", "Court"], ["Protester", "Citizen", "Opposition"]),
    "Use conventional military force": (["Military"], ["Military", "Citizen"]),
    "Demonstrate or rally": (["Protester", "Citizen"], ["Government", "Police"]),
    "Sign formal agreement": (["Government", "Business"], ["Government", "Business"]),
    "Provide economic aid": (["Government", "Ministry"], ["Government", "Citizen"]),
}
FOLLOW_UPS = {  # what tends to happen next about the same actors
    "Criticize or denounce": ["Make statement", "Arrest, detain, or charge with legal action"],
    "Demonstrate or rally": ["Arrest, detain, or charge with legal action", "Make statement"],
    "Consult": ["Engage in negotiation", "Sign formal agreement"],
    "Engage in negotiation": ["Sign formal agreement", "Express intent to cooperate"],
    "Host a visit": ["Consult", "Sign formal agreement"],
    "Make an appeal or request": ["Make statement", "Provide economic aid"],
}


def partners(country: str) -> list[str]:
    """A fixed 'alliance' of three countries per country, so foreign partners are learnable."""
    i = COUNTRIES.index(country)
    return [COUNTRIES[(i + d) % len(COUNTRIES)] for d in (1, 5, 11)]


def country_of(date: dt.date) -> str:
    """Where the day's news comes from: the month picks a pair of countries, the day's parity one."""
    return COUNTRIES[(date.month - 1) * 2 + date.day % 2]


def actor(rng: random.Random, role: str, country: str) -> str:
    if role == "Government" and rng.random() < 0.3:
        named = [p for p, c in PEOPLE.items() if c == country]
        if named:
            return named[0]
    return f"{role} ({country})"


def pick(rng: random.Random, options: list[str], usual: float = 0.7) -> str:
    """The first option most of the time: a habit a model can learn, with some noise."""
    return options[0] if rng.random() < usual else rng.choice(options)


def quad(rng: random.Random, relation: str, country: str, date: dt.date) -> tuple[str, str, str, str]:
    head_roles, tail_roles = RELATIONS[relation]
    tail_country = country if rng.random() < 0.7 else partners(country)[0]
    head = actor(rng, pick(rng, head_roles), country)
    tail = actor(rng, pick(rng, tail_roles), tail_country)
    return head, relation, tail, date.isoformat()


def line(rng: random.Random) -> str:
    date = dt.date(2014, 1, 1) + dt.timedelta(days=rng.randrange(365))
    country = country_of(date) if rng.random() < 0.85 else rng.choice(COUNTRIES)
    relation = rng.choice(list(RELATIONS))
    quads = []
    for _ in range(rng.choice([1, 2, 2, 3])):
        quads.append("\t".join(quad(rng, relation, country, date)))
        relation = rng.choice(FOLLOW_UPS.get(relation, list(RELATIONS)))
        date += dt.timedelta(days=rng.choice([0, 1, 1, 2]))
    return SEPARATOR.join(quads)


def write_corpus(out_dir: Path) -> None:
    rng = random.Random(SEED)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.txt", TRAIN_LINES), ("validation.txt", VALIDATION_LINES)):
        text = "\n".join(line(rng) for _ in range(n)) + "\n"
        (out_dir / name).write_text(text, encoding="utf-8")


def write_tokenizer(corpus: Path, out_dir: Path) -> None:
    """A RoBERTa-style byte-level BPE, saved so that AutoTokenizer can load it."""
    import json

    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing

    tok = ByteLevelBPETokenizer(add_prefix_space=False, trim_offsets=True)
    tok.train(
        files=[str(corpus)],
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    tok.post_processor = RobertaProcessing(("</s>", tok.token_to_id("</s>")),
                                           ("<s>", tok.token_to_id("<s>")),
                                           trim_offsets=True, add_prefix_space=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save_model(str(out_dir))  # vocab.json, merges.txt
    tok.save(str(out_dir / "tokenizer.json"))
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                "cls_token": "<s>", "pad_token": "<pad>", "mask_token": "<mask>"}
    config = {"tokenizer_class": "RobertaTokenizer", "model_max_length": 512,
              "add_prefix_space": False, "trim_offsets": True, **specials}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")


def build(data_dir: Path) -> None:
    write_corpus(data_dir / "kg_quads")
    write_tokenizer(data_dir / "kg_quads" / "train.txt", data_dir / "tokenizer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare a fresh build with data/")
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="where to write (default: data/)")
    args = parser.parse_args(argv)
    if not args.check:
        build(args.out)
        print(f"wrote {args.out / 'kg_quads'} and {args.out / 'tokenizer'}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        diffs = [str(p.relative_to(tmp)) for p in sorted(Path(tmp).rglob("*")) if p.is_file()
                 and not ((DATA_DIR / p.relative_to(tmp)).is_file()
                          and filecmp.cmp(p, DATA_DIR / p.relative_to(tmp), shallow=False))]
    if diffs:
        print("data/ differs from a fresh build: " + ", ".join(diffs), file=sys.stderr)
        return 1
    print("data/ matches a fresh build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
