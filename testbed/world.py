"""The toy world: fictional entities, Wikipedia-style passages and multi-hop questions.

Deterministic from a seed. Every name is invented from syllables, so an answer
can only be known by reading the passages, never from a model's memory.
The world is a set of *chains*, each ``product -> company -> founder -> city ->
country``, rendered as one wiki-18 passage per entity (``{"id", "contents":
"\\"Title\\"\\ntext"}``). Chains are split into ``train`` and ``test``: nothing
of a test chain (names, facts, passages) appears in training.

Questions (each with its gold answer and gold passage ids):

* ``1hop``: "Who founded Zorvath Works?"
* ``2hop``: "Who founded the company that makes the Lumet 7?",
  "In which country was Mara Quessel born?" (bridge questions)
* ``comparison``: "Which company was founded earlier, A or B?"

:func:`counterfactual` rewires a world (same entities, other facts), to tell
answers read from retrieval from answers remembered.

    python -m research.testbed.world --out world/ --chains 1000
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

_ONSETS = [
    "b",
    "c",
    "d",
    "f",
    "g",
    "h",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "dr",
    "kr",
    "pr",
    "st",
    "tr",
    "th",
    "sh",
    "ch",
    "gr",
]
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "ai", "ou"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "m", "x", "nd", "rk"]
_COMPANY = ["Works", "Industries", "Group", "Labs", "Company", "Systems"]
_CITY = ["", "", "ford", "holm", "ton", "burg", "vale"]
_COUNTRY = ["ia", "land", "ania", "or", "istan"]
_JOBS = ["engineer", "chemist", "merchant", "architect", "inventor", "banker"]

QuestionType = Literal["1hop", "2hop", "comparison", "client"]


@dataclass(frozen=True, slots=True)
class Chain:
    """One product -> company -> founder -> city -> country chain and its facts."""

    product: str
    company: str
    founder: str
    city: str
    country: str
    product_year: int
    company_year: int
    founder_year: int
    job: str


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    question: str
    answer: str
    type: QuestionType
    gold_ids: list[str]
    """The passages that hold the facts, in hop order."""
    queries: list[str]
    """What the oracle searches for, in order: the entity named by each hop."""
    turns: list[str]
    """The oracle's model turns; one more than queries (a result block follows each search)."""
    thoughts: list[str]
    """What the oracle thinks in each turn (:mod:`research.testbed.dialects` writes the turns in other dialects)."""


@dataclass(frozen=True, slots=True)
class World:
    seed: int
    train: list[Chain]
    test: list[Chain]

    def chains(self, split: Literal["train", "test", "all"] = "all") -> list[Chain]:
        return {"train": self.train, "test": self.test, "all": self.train + self.test}[split]

    def passages(self, split: Literal["train", "test", "all"] = "all") -> list[dict[str, str]]:
        unique = {p["id"]: p for c in self.chains(split) for p in chain_passages(c)}  # cities are shared by chains
        return list(unique.values())

    def names(self, split: Literal["train", "test", "all"] = "all") -> list[str]:
        """Every entity name of the split's chains, sorted."""
        fields = ("product", "company", "founder", "city", "country")
        return sorted({getattr(c, f) for c in self.chains(split) for f in fields})

    def questions(self, split: Literal["train", "test"], *, seed: int = 0) -> list[Question]:
        chains = self.chains(split)
        rng = random.Random(f"{self.seed}-{split}-{seed}")
        out = [q for i, c in enumerate(chains) for q in chain_questions(c, f"{split}-{i}")]
        pairs = list(zip(chains[::2], chains[1::2], strict=False))
        out += [comparison(a, b, f"{split}-cmp-{i}", rng) for i, (a, b) in enumerate(pairs)]
        return out


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)).title()


def ceo_of(company: str) -> str:
    """Who runs ``company``: a fact no passage holds, known only to a client's own tool."""
    rng = random.Random(f"ceo-{company}")
    return f"{_word(rng, 2)} {_word(rng, 2)}"


def _unique(rng: random.Random, used: set[str], make) -> str:
    while (name := make()) in used:
        pass
    used.add(name)
    return name


def make_world(seed: int = 0, *, chains: int = 1000, test_fraction: float = 0.2) -> World:
    """A world of ``chains`` chains (5 passages each), the last ``test_fraction`` held out."""
    rng = random.Random(seed)
    used: set[str] = set()
    countries = [_unique(rng, used, lambda: _word(rng, 2) + rng.choice(_COUNTRY)) for _ in range(max(4, chains // 4))]
    cities = [
        (_unique(rng, used, lambda: _word(rng, rng.randint(1, 2)) + rng.choice(_CITY)), rng.choice(countries))
        for _ in range(max(8, chains))
    ]
    made: list[Chain] = []
    for _ in range(chains):
        city, country = rng.choice(cities)
        made.append(
            Chain(
                product=_unique(rng, used, lambda: f"{_word(rng, 2)} {rng.randint(2, 99)}"),
                company=_unique(rng, used, lambda: f"{_word(rng, 2)} {rng.choice(_COMPANY)}"),
                founder=_unique(rng, used, lambda: f"{_word(rng, 2)} {_word(rng, rng.randint(2, 3))}"),
                city=city,
                country=country,
                product_year=rng.randint(1950, 2020),
                company_year=rng.randint(1850, 1990),
                founder_year=rng.randint(1800, 1960),
                job=rng.choice(_JOBS),
            )
        )
    n_test = round(chains * test_fraction)
    return World(seed, made[: chains - n_test], made[chains - n_test :])


def _slug(name: str) -> str:
    return name.lower().replace(" ", "-")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def chain_passages(c: Chain) -> list[dict[str, str]]:
    """The chain's passages in wiki-18 format (cities and countries are shared, so keyed by name)."""
    texts = {
        c.product: f"{c.product} is a product made by {c.company}. It was first sold in {c.product_year}.",
        c.company: f"{c.company} is a company founded by {c.founder}. It was founded in {c.company_year} "
        f"and has its headquarters in {c.city}.",
        c.founder: f"{c.founder} was {_article(c.job)} {c.job} born in {c.city} in {c.founder_year}.",
        c.city: f"{c.city} is a city in {c.country}.",
    }
    return [{"id": _slug(title), "contents": f'"{title}"\n{text}'} for title, text in texts.items()]


def _turn(think: str, query: str | None = None) -> str:
    return f" <think> {think} </think>" + (f" <search> {query} </search>" if query is not None else "")


def _answer(think: str, answer: str) -> str:
    # The space after the brace makes the name's first piece the token it is everywhere
    # else (" Mara", not "Mara"); answer extraction and exact match ignore it.
    return _turn(think) + f" <answer> The final answer is \\[ \\boxed{{ {answer}}} \\] </answer>"


def _question(
    qid: str, text: str, answer: str, type_: QuestionType, steps: list[tuple[str, str]], last: str
) -> Question:
    """A question and its oracle trace: ``steps`` are (thought, query) pairs, ``last`` the final thought."""
    turns = [_turn(thought, query) for thought, query in steps] + [_answer(last, answer)]
    thoughts = [thought for thought, _ in steps] + [last]
    return Question(qid, text, answer, type_, [_slug(q) for _, q in steps], [q for _, q in steps], turns, thoughts)


def chain_questions(c: Chain, qid: str) -> list[Question]:
    """The 1-hop and 2-hop (bridge) questions a chain answers, with oracle traces.

    The oracle names an entity in two ways only, so that a model can learn to copy
    names it never saw: it restates a fact in the words of its passage ("made by X",
    "founded by X", "born in X", "a city in X"), and each search query and final
    answer is the entity named last. Its other words name no entity ("this company").
    """
    makes = ("I need the company that makes it.", c.product)
    founder = ("I need the founder of this company.", c.company)
    born = ("I need where this person was born.", c.founder)
    made_by = f"It is made by {c.company}."
    founded_by = f"It was founded by {c.founder}."
    born_in = f"The person was born in {c.city}."
    return [
        _question(f"{qid}-a", f"Who founded {c.company}?", c.founder, "1hop", [founder], founded_by),
        _question(f"{qid}-b", f"Which company makes {c.product}?", c.company, "1hop", [makes], made_by),
        _question(f"{qid}-c", f"In which city was {c.founder} born?", c.city, "1hop", [born], born_in),
        _question(
            f"{qid}-d", f"Who founded the company that makes {c.product}?", c.founder, "2hop",
            [makes, (f"{made_by} Now I need the founder of this company.", c.company)], founded_by,
        ),
        _question(
            f"{qid}-e", f"In which city was the founder of {c.company} born?", c.city, "2hop",
            [founder, (f"{founded_by} Now I need where this person was born.", c.founder)], born_in,
        ),
        _question(
            f"{qid}-f", f"In which country was {c.founder} born?", c.country, "2hop",
            [born, (f"{born_in} Now I need the country of this city.", c.city)], f"It is a city in {c.country}.",
        ),
    ]  # fmt: skip


def client_questions(world: World, split: Literal["train", "test"]) -> list[Question]:
    """The question "Who runs the company that makes P?" per chain: a search, then a client's own tool (:func:`ceo_of`).

    Only a model that can call the client's tools answers these (ReCall's); they have no ReSearch turns.
    """
    out = []
    for i, c in enumerate(world.chains(split)):
        thoughts = [
            "I need the company that makes it.",
            f"It is made by {c.company}. Now I need who runs this company.",
            f"It is run by {ceo_of(c.company)}.",
        ]
        question = f"Who runs the company that makes {c.product}?"
        queries = [c.product, c.company]
        out.append(
            Question(f"{split}-{i}-g", question, ceo_of(c.company), "client", [_slug(c.product)], queries, [], thoughts)
        )
    return out


def comparison(a: Chain, b: Chain, qid: str, rng: random.Random) -> Question:
    """Which of two companies was founded earlier (ties go to the first named)."""
    first, second = (a, b) if rng.random() < 0.5 else (b, a)
    earlier = first if first.company_year <= second.company_year else second
    return _question(
        qid,
        f"Which company was founded earlier, {first.company} or {second.company}?",
        earlier.company,
        "comparison",
        [
            (f"I need the founding years of {first.company} and {second.company}.", first.company),
            (f"{first.company} was founded in {first.company_year}. Now I need {second.company}.", second.company),
        ],
        f"{second.company} was founded in {second.company_year}. The earlier one is {earlier.company}.",
    )


def counterfactual(world: World, seed: int = 1) -> World:
    """Same entities, other facts: the test chains' links and years are shuffled among them."""
    rng = random.Random(seed)
    test = world.test
    companies, founders, cities = ([getattr(c, k) for c in test] for k in ("company", "founder", "city"))
    for names in (companies, founders, cities):
        rng.shuffle(names)
    rewired = [
        replace(c, company=co, founder=f, city=ci, company_year=rng.randint(1850, 1990))
        for c, co, f, ci in zip(test, companies, founders, cities, strict=True)
    ]
    country_of = {c.city: c.country for c in world.train + world.test}
    rewired = [replace(c, country=country_of[c.city]) for c in rewired]
    return replace(world, test=rewired)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a toy world: passages (wiki-18 jsonl) and questions.")
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chains", type=int, default=1000, help="entity chains (5 passages each)")
    args = parser.parse_args(argv)
    world = make_world(args.seed, chains=args.chains)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in [
        ("passages.jsonl", world.passages()),
        ("train_questions.jsonl", [asdict(q) for q in world.questions("train")]),
        ("test_questions.jsonl", [asdict(q) for q in world.questions("test")]),
    ]:
        with open(args.out / name, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        print(f"{args.out / name}: {len(rows)} rows")


if __name__ == "__main__":
    main()
