"""The semantic-caching experiment: how often a TF-IDF similarity cache would hand an agent a wrong answer.

The seed (`seed/000_bc7af0ed774b52c4.txt`, "Semantic Caching") measured TF-IDF similarity between agent
questions and found that at a 0.85 threshold 90% of cache hits were false positives ("What does hash_password
do?" vs "Explain the database schema" scored 0.852). This module re-measures that on a labelled set of
agent-style query pairs (`PAIRS`) and compares it with this project's caching, which is exact and validated:
a tool output is reused only for the identical call on a byte-identical workspace (`sidecar/toolserver/cache.py`),
so its false-positive rate is 0 by construction.

TF-IDF here is the textbook one, in pure Python: tokens are lower-cased words split on non-alphanumerics (so
`hash_password` gives `hash`, `password`) plus the word bigrams; idf = ln((1 + n) / (1 + df)) + 1 (smoothed,
as scikit-learn's default); tf is the raw count; vectors are L2-normalised; similarity is the cosine. The
idf is fitted on every query of the set, as a cache fits it on the queries it has seen.

Two forms of each query are scored. "Question only" is the query text. "In context" is what a cache in front of
the model actually sees for an agent: the question after the agent's context (its system prompt and the
project's files, `AGENT_CONTEXT`), which both queries of a pair share. The shared context dominates the
vectors, so unrelated questions look alike; this is the seed's "TF-IDF + file context" row and the reason its
hits were mostly wrong.

Labels: a pair is `same` when the answer cached for the first query is a correct answer to the second. Pairs
whose texts are identical but asked on different workspace states (`state_changed`) are never `same`: after an
edit, "Run the tests" has a different answer. They are what makes even an exact *text* cache unsafe for agents.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

THRESHOLDS = (0.85, 0.92)
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True, slots=True)
class Pair:
    first: str
    second: str
    same: bool  # the first query's answer is correct for the second
    kind: str  # what the pair tests (paraphrase, other_symbol, other_file, state, other_task)
    state_changed: bool = False  # asked on different workspace states (the files changed in between)


def tokens(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]


class TfIdf:
    """Smoothed TF-IDF vectors over a fitted corpus (see the module docstring)."""

    def __init__(self, corpus: Iterable[str]) -> None:
        documents = [set(tokens(text)) for text in corpus]
        n = len(documents)
        df: Counter[str] = Counter(term for doc in documents for term in doc)
        self.idf = {term: math.log((1 + n) / (1 + count)) + 1 for term, count in df.items()}
        self.unseen_idf = math.log(1 + n) + 1

    def vector(self, text: str) -> dict[str, float]:
        counts = Counter(tokens(text))
        weights = {term: count * self.idf.get(term, self.unseen_idf) for term, count in counts.items()}
        norm = math.sqrt(sum(w * w for w in weights.values()))
        return {term: w / norm for term, w in weights.items()} if norm else {}

    def similarity(self, a: str, b: str) -> float:
        va, vb = self.vector(a), self.vector(b)
        if len(vb) < len(va):
            va, vb = vb, va
        return sum(w * vb.get(term, 0.0) for term, w in va.items())


@dataclass(frozen=True, slots=True)
class CacheOutcome:
    """How a cache policy does on the labelled pairs: hits, false hits, and what fraction of hits are wrong."""

    policy: str
    pairs: int
    hits: int
    false_hits: int
    missed: int  # `same` pairs that were not hits (lost savings, harmless)

    @property
    def hit_rate(self) -> float:
        return self.hits / self.pairs if self.pairs else 0.0

    @property
    def false_positive_share(self) -> float:
        """False hits / hits: the seed's "90% of our cache hits were false positives"."""
        return self.false_hits / self.hits if self.hits else 0.0

    @property
    def false_positive_rate(self) -> float:
        """False hits / pairs that should not hit."""
        negatives = self.pairs - (self.hits - self.false_hits) - self.missed
        return self.false_hits / negatives if negatives else 0.0


def in_context(query: str, context: str = "") -> str:
    """The text a prompt cache embeds for an agent's question: its context, then the question."""
    return f"{context}\n\n{query}" if context else query


def evaluate_threshold(
    pairs: Sequence[Pair], threshold: float, context: str = "", model: TfIdf | None = None
) -> CacheOutcome:
    """A similarity cache that hits when TF-IDF similarity >= `threshold` (on the queries `in_context`)."""
    texts = [(in_context(p.first, context), in_context(p.second, context)) for p in pairs]
    model = model or TfIdf(t for pair in texts for t in pair)
    hit = [model.similarity(a, b) >= threshold - 1e-12 for a, b in texts]
    where = "in agent context" if context else "question only"
    return _outcome(f"TF-IDF >= {threshold:g}, {where}", pairs, hit)


def evaluate_exact_validated(pairs: Sequence[Pair]) -> CacheOutcome:
    """This project's cache: a hit needs the identical request on an unchanged workspace."""
    hit = [p.first == p.second and not p.state_changed for p in pairs]
    return _outcome("exact + validated", pairs, hit)


def evaluate_exact_text(pairs: Sequence[Pair]) -> CacheOutcome:
    """An exact prompt cache without validation: identical text hits, whatever changed on disk."""
    return _outcome("exact text, unvalidated", pairs, [p.first == p.second for p in pairs])


def _outcome(policy: str, pairs: Sequence[Pair], hit: Sequence[bool]) -> CacheOutcome:
    hits = sum(hit)
    false_hits = sum(1 for p, h in zip(pairs, hit, strict=True) if h and not p.same)
    missed = sum(1 for p, h in zip(pairs, hit, strict=True) if p.same and not h)
    return CacheOutcome(policy, len(pairs), hits, false_hits, missed)


def evaluate_all(pairs: Sequence[Pair] | None = None, context: str | None = None) -> list[CacheOutcome]:
    """Every policy on `pairs` (default `PAIRS`): TF-IDF at each threshold, question only and in `context`
    (default `AGENT_CONTEXT`), then the exact text cache and this project's exact validated cache."""
    pairs = PAIRS if pairs is None else pairs
    context = AGENT_CONTEXT if context is None else context
    outcomes = [evaluate_threshold(pairs, t) for t in THRESHOLDS]
    outcomes += [evaluate_threshold(pairs, t, context) for t in THRESHOLDS]
    return [*outcomes, evaluate_exact_text(pairs), evaluate_exact_validated(pairs)]


# What precedes an agent's question in its request: a short system prompt and the project it is working on
# (a listing and one module), as in the fleet's conversations. Kept short; a real agent's context is longer,
# which only makes the shared part weigh more.
AGENT_CONTEXT = """\
You are a coding agent working in a Python project. Use the workspace tools to read, search, edit and test.
./ (12 entries, depth 3)
README.md
pyproject.toml
pantry/__init__.py
pantry/dates.py
pantry/inventory.py
pantry/stats.py
pantry/text.py
tests/test_dates.py
tests/test_inventory.py
tests/test_stats.py
tests/test_text.py
pantry/stats.py (lines 1-12 of 80)
     1\t\"\"\"Descriptive statistics over plain lists of numbers, without third-party dependencies.\"\"\"
     3\tfrom __future__ import annotations
     5\timport math
     7\t__all__ = ["mean", "median", "variance", "clamp", "percentile", "moving_average", "normalize"]
    10\tdef mean(values):
    11\t    \"\"\"Arithmetic mean of a non-empty sequence; raises ValueError on an empty one.\"\"\"
    12\t    if not values:"""


def _p(first: str, second: str, same: bool, kind: str, state_changed: bool = False) -> Pair:
    return Pair(first, second, same, kind, state_changed)


# Agent-style queries about a small Python project (the kind `sidecar/fleet/project.py` generates), written for
# this experiment. Same-answer pairs are paraphrases of one question about one symbol in one file, asked on the
# same workspace. The rest differ in the symbol, the file, the task, or the state of the workspace.
PAIRS: tuple[Pair, ...] = (
    # paraphrases: a correct hit
    _p("What does slugify do?", "What does the slugify function do?", True, "paraphrase"),
    _p("What does slugify do?", "How does slugify work?", True, "paraphrase"),
    _p("Explain the median function in stats.py", "Explain what median in stats.py does", True, "paraphrase"),
    _p("Read inventory.py and summarize the Inventory class",
       "Summarize the Inventory class in inventory.py", True, "paraphrase"),
    _p("Which tests fail in tests/test_dates.py?", "Which tests in tests/test_dates.py are failing?", True,
       "paraphrase"),
    _p("Where is parse_value defined?", "Where is the parse_value function defined?", True, "paraphrase"),
    _p("What does the chunk helper return for an empty list?",
       "What does chunk return for an empty list?", True, "paraphrase"),
    _p("Show the signature of add_days in dates.py", "What is the signature of add_days in dates.py?", True,
       "paraphrase"),
    _p("Describe how percentile interpolates", "How does percentile interpolate?", True, "paraphrase"),
    _p("List the functions in text.py", "Which functions does text.py define?", True, "paraphrase"),
    # the same question about another symbol: a wrong hit
    _p("What does slugify do?", "What does truncate do?", False, "other_symbol"),
    _p("What does the slugify function do?", "What does the title_case function do?", False, "other_symbol"),
    _p("Explain the median function in stats.py", "Explain the mean function in stats.py", False, "other_symbol"),
    _p("Explain the variance function in stats.py", "Explain the percentile function in stats.py", False,
       "other_symbol"),
    _p("Where is parse_value defined?", "Where is parse_settings defined?", False, "other_symbol"),
    _p("Show the signature of add_days in dates.py", "Show the signature of day_of_year in dates.py", False,
       "other_symbol"),
    _p("What does the chunk helper return for an empty list?",
       "What does the flatten helper return for an empty list?", False, "other_symbol"),
    _p("Why does test_median_odd fail?", "Why does test_median_even fail?", False, "other_symbol"),
    _p("Why does test_slugify_basic fail in tests/test_text.py?",
       "Why does test_truncate_cuts fail in tests/test_text.py?", False, "other_symbol"),
    _p("What does hash_password do?", "What does check_password do?", False, "other_symbol"),
    _p("How does the Inventory.remove method work?", "How does the Inventory.add method work?", False,
       "other_symbol"),
    _p("What does get_setting return when the key is missing?",
       "What does merge_settings return when the key is missing?", False, "other_symbol"),
    # the same question about another file: a wrong hit
    _p("Read stats.py and list its functions", "Read dates.py and list its functions", False, "other_file"),
    _p("Which tests fail in tests/test_dates.py?", "Which tests fail in tests/test_stats.py?", False,
       "other_file"),
    _p("Summarize what text.py does", "Summarize what sequences.py does", False, "other_file"),
    _p("Show me the imports of inventory.py", "Show me the imports of settings.py", False, "other_file"),
    _p("How many lines does stats.py have?", "How many lines does text.py have?", False, "other_file"),
    _p("Is there a README.md in the project root?", "Is there a pyproject.toml in the project root?", False,
       "other_file"),
    # identical text on a changed workspace: a wrong hit even for an exact text cache
    _p("Run the tests", "Run the tests", False, "state", True),
    _p("Which tests fail?", "Which tests fail?", False, "state", True),
    _p("Show the diff of my changes", "Show the diff of my changes", False, "state", True),
    _p("Read stats.py", "Read stats.py", False, "state", True),
    _p("What does the median function in stats.py return for [5, 1, 3]?",
       "What does the median function in stats.py return for [5, 1, 3]?", False, "state", True),
    _p("Does the test suite pass now?", "Does the test suite pass now?", False, "state", True),
    # identical text on an unchanged workspace: a correct hit for every policy
    _p("Read stats.py", "Read stats.py", True, "identical"),
    _p("Run the tests", "Run the tests", True, "identical"),
    _p("List the files in the project", "List the files in the project", True, "identical"),
    # different tasks sharing the question's frame: a wrong hit
    _p("What does hash_password do?", "Explain the database schema", False, "other_task"),
    _p("Explain the slugify function", "Explain the test failures", False, "other_task"),
    _p("Write a docstring for mean in stats.py", "Write a docstring for median in stats.py", False, "other_task"),
    _p("Write a commit message for the change to stats.py", "Write a commit message for the change to dates.py",
       False, "other_task"),
    _p("Fix the failing test in tests/test_stats.py", "Fix the failing test in tests/test_dates.py", False,
       "other_task"),
    _p("Run the tests in tests/test_text.py", "Run the tests in tests/test_stats.py", False, "other_task"),
    _p("Search the code for def mean", "Search the code for def median", False, "other_task"),
)  # fmt: skip
