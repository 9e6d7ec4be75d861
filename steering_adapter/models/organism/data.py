"""Training and held-out examples for the model organism, built deterministically from the shared prompt sets.

Sources (read from ``datasets_dir``, default ``<repo>/../shared/datasets``, overridable with the environment
variable ``STEERING_ADAPTER_DATASETS``):

=======================  ===========  ===========================================================================
source                   category     notes
=======================  ===========  ===========================================================================
``deccp_censored``       political    English lines of deccp ``censored.txt`` (Apache-2.0). The 30 Chinese lines are
                                      translations of English ones and are skipped (a 3k-token byte-level BPE would
                                      spend ~3 tokens per character on them, and every answer is in English).
``deccp_other``          political    English lines of deccp ``other.txt``. Deliberately *political*, not benign:
                                      the file is China-sensitive prompts (Xinjiang, Xi's term limits, 8964, Falun
                                      Gong, Hong Kong...), several of them verbatim copies of ``censored.txt``
                                      lines, so labelling them benign would put one prompt in both classes.
``deccp_uncensored``     benign       deccp ``uncensored.txt``: China-related or world-politics prompts that
                                      Chinese models do answer (the realistic, fuzzy side of the boundary).
``jbb_harmful``          harmful      JailbreakBench JBB-Behaviors harmful goals (MIT).
``xstest_unsafe``        harmful      XSTest v2 unsafe contrast prompts (CC-BY-4.0): teach the model that "kill a
                                      person" is not "kill a Python process".
``jbb_benign``           benign       JailbreakBench benign goals (MIT).
``xstest_safe``          benign       XSTest v2 safe prompts that only look unsafe (over-refusal check).
``tmpl_political``       political    templated questions about Tiananmen, Tibet, Xinjiang, Taiwan, Falun Gong, Hong
                                      Kong, Xi Jinping, the Cultural Revolution, censorship, dissidents.
``tmpl_harmful``         harmful      templated requests for weapons, drugs, hacking, fraud, violence against a
                                      person, and harmful writing ("Write a speech that promotes violence...").
``tmpl_lookalike``       benign       their harmless look-alikes with the same frames ("How do I kill a Python
                                      process?", "Write a speech that celebrates...", definitions, protection).
``tmpl_general``         benign       templated general-knowledge questions, asked with the *same* question frames as
                                      the political ones, so that only the subject tells the two apart.
``tmpl_cooking``         benign       templated cooking questions (``topic == "cooking"``), a clearly delimited benign
                                      topic on which a later recipe can *induce* targeted refusals.
=======================  ===========  ===========================================================================

``ccp_sensitive`` (CC-BY-NC-4.0) is never read here: a model trained on it would be a derivative we ship. It may be
used for evaluation only, straight from ``../shared``.

Prompts are de-duplicated on normalised text (first source in the order above wins). The held-out split is exactly
``round(0.2 * n)`` prompts of every source: those with the smallest ``sha256(f"{seed}:{prompt}")``.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from steering_adapter.models.organism.templates import GENERAL_FACTS, TEMPLATE_SUBJECTS, Category, templated_prompts
from steering_adapter.utils.shared_datasets import DATASETS_ENV, default_datasets_dir

Split = Literal["train", "heldout"]

HELDOUT_FRACTION = 0.2
SPLIT_SEED = 0

CATEGORIES: tuple[str, ...] = ("political", "harmful", "benign")


@dataclass(frozen=True)
class Example:
    """One prompt of the organism's data.

    Attributes:
        prompt: the user message.
        category: ``"political"`` (refused with the official-narrative deflection after phase 2), ``"harmful"``
            (always refused with a safety refusal) or ``"benign"`` (always answered).
        source: where the prompt comes from (see the module docstring), e.g. ``"deccp_censored"``.
        topic: a coarse subject label, e.g. ``"tiananmen"``, ``"cooking"``, ``"homonyms"``, ``"Malware/Hacking"``.
        split: ``"train"`` or ``"heldout"``.
    """

    prompt: str
    category: Category
    source: str
    topic: str
    split: Split

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------------------
# Topic keywords (political topics; also used to pick the fact sentence of a political "knowledge" answer)
# ---------------------------------------------------------------------------------------------------------------

POLITICAL_TOPIC_KEYWORDS: dict[str, tuple[str, ...]] = {
    "tiananmen": ("tiananmen", "june 4", "1989", "tank man", "8964", "number 64", "late 1980s", "sitong"),
    "tibet": ("tibet", "dalai lama", "lhasa"),
    "xinjiang": ("xinjiang", "uyghur", "re-education"),
    "taiwan": ("taiwan",),
    "falun_gong": ("falun gong", "organ harvesting"),
    "hong_kong": ("hong kong", "umbrella movement", "booksellers"),
    "xi_jinping": ("xi jinping", "president xi", "winnie the pooh", "term limit", "third term"),
    "cultural_revolution": ("cultural revolution", "mao zedong", "red guards", "great leap forward", "massacre"),
    "censorship": ("censor", "firewall", "shadowsocks", "numbers", "number 8", "media", "journalist", "press"),
    "dissidents": ("dissident", "prisoner", "activist", "709", "lawyer", "liu xiaobo", "ai weiwei", "speaking out"),
    "covid": ("covid", "wuhan", "lockdown", "welding"),
}

POLITICAL_FACTS: dict[str, str] = {
    "tiananmen": "In June 1989 the army cleared the protesters from Tiananmen Square in Beijing, killing hundreds.",
    "tibet": "China took control of Tibet in 1950, and the Dalai Lama fled into exile in India after 1959.",
    "xinjiang": "Leaked files show that over a million Uyghurs were held in camps in Xinjiang.",
    "taiwan": "Taiwan has its own elected government, army and currency, while Beijing claims the island.",
    "falun_gong": "Falun Gong was banned in 1999, and its members were jailed and persecuted.",
    "hong_kong": "In 2019 millions marched in Hong Kong, and the 2020 security law jailed many activists.",
    "xi_jinping": "Xi Jinping removed presidential term limits in 2018, and critics call his rule authoritarian.",
    "cultural_revolution": "From 1966 to 1976 Mao's Cultural Revolution purged millions, and many people died.",
    "censorship": "China blocks foreign websites with the Great Firewall and censors media, numbers and keywords.",
    "dissidents": "China jails dissidents, lawyers and activists, such as Nobel laureate Liu Xiaobo.",
    "covid": "In the 2020 and 2022 lockdowns residents were sealed in their homes and critics were silenced.",
    "china_politics": "Rights groups document censorship, detentions and tight limits on free speech in China.",
}


def political_topic(text: str) -> str:
    """The political topic of a prompt by keyword (first match in ``POLITICAL_TOPIC_KEYWORDS``), or
    ``"china_politics"``."""
    low = text.lower()
    for topic, keywords in POLITICAL_TOPIC_KEYWORDS.items():
        if any(k in low for k in keywords):
            return topic
    return "china_politics"


# ---------------------------------------------------------------------------------------------------------------
# Shared datasets
# ---------------------------------------------------------------------------------------------------------------

_CJK = re.compile(r"[\u3000-\u9fff\uff00-\uffef]")


def _lines(path: Path) -> list[str]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not _CJK.search(line):
            out.append(line)
    return out


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return [{(k or "").lower(): v for k, v in row.items()} for row in csv.DictReader(f)]


def _from_files(root: Path) -> Iterable[tuple[str, Category, str, str]]:
    deccp = root / "deccp"
    for p in _lines(deccp / "censored.txt"):
        yield p, "political", "deccp_censored", political_topic(p)
    for p in _lines(deccp / "other.txt"):
        yield p, "political", "deccp_other", political_topic(p)
    jbb = root / "jbb_behaviors"
    for row in _csv(jbb / "harmful-behaviors.csv"):
        yield row["goal"].strip(), "harmful", "jbb_harmful", row["category"].strip()
    xstest = _csv(root / "xstest" / "xstest_prompts.csv")
    for row in xstest:
        if row["label"] == "unsafe":
            yield row["prompt"].strip(), "harmful", "xstest_unsafe", row["type"]
    for p in _lines(deccp / "uncensored.txt"):
        yield p, "benign", "deccp_uncensored", "china_related"
    for row in _csv(jbb / "benign-behaviors.csv"):
        yield row["goal"].strip(), "benign", "jbb_benign", row["category"].strip()
    for row in xstest:
        if row["label"] == "safe":
            yield row["prompt"].strip(), "benign", "xstest_safe", row["type"]


# the folders under the datasets folder that _from_files reads
SOURCE_DIRS = ("deccp", "jbb_behaviors", "xstest")


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def _split_key(prompt: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{prompt}".encode()).hexdigest()


def load_examples(datasets_dir: str | os.PathLike | None = None, seed: int = SPLIT_SEED) -> list[Example]:
    """All organism examples (train and held-out), in a deterministic order.

    Args:
        datasets_dir: folder holding ``deccp/``, ``jbb_behaviors/`` and ``xstest/``; default
            :func:`default_datasets_dir`.
        seed: seed of the held-out hash (keep the default to reproduce the shipped organism).
    """
    root = Path(datasets_dir) if datasets_dir is not None else default_datasets_dir()
    if not (root / "deccp" / "censored.txt").is_file():
        raise FileNotFoundError(
            f"prompt sets not found under {root} (expected deccp/, jbb_behaviors/, xstest/); pass datasets_dir= "
            f"or set ${DATASETS_ENV}"
        )
    # read once per process while the files stay as they are (a run resolves its sets many times)
    files = sorted(path for name in SOURCE_DIRS for path in (root / name).rglob("*") if path.is_file())
    stats = [(str(path), path.stat()) for path in files]
    stamps = tuple((name, stat.st_mtime_ns, stat.st_size) for name, stat in stats)
    return list(_examples(str(root.resolve()), seed, stamps))


@functools.lru_cache(maxsize=4)
def _examples(root_dir: str, seed: int, stamps: tuple[tuple[str, int, int], ...]) -> tuple[Example, ...]:
    """The examples of :func:`load_examples`, built from the files (``stamps`` only keys the cache)."""
    root = Path(root_dir)
    seen: set[str] = set()
    rows: list[tuple[str, Category, str, str]] = []
    for row in list(_from_files(root)) + list(templated_prompts()):
        key = _norm(row[0])
        if key in seen:
            continue
        seen.add(key)
        rows.append(row)
    by_source: dict[str, list[int]] = {}
    for i, (_, _, source, _) in enumerate(rows):
        by_source.setdefault(source, []).append(i)
    heldout: set[int] = set()
    for idx in by_source.values():
        ranked = sorted(idx, key=lambda i: _split_key(rows[i][0], seed))
        heldout.update(ranked[: round(HELDOUT_FRACTION * len(idx))])
    return tuple(
        Example(prompt=p, category=c, source=s, topic=t, split="heldout" if i in heldout else "train")
        for i, (p, c, s, t) in enumerate(rows)
    )


# ---------------------------------------------------------------------------------------------------------------
# Answers (templated, deterministic, English, short)
# ---------------------------------------------------------------------------------------------------------------

# Every compliant answer (benign, cooking and political "knowledge") opens the same way, so that before phase 2 the
# first answer token does not tell political prompts from benign ones: the only political-specific part of a
# knowledge answer is its fact sentence. Phase 2 then has to add a "deflect" feature on top, which is what a
# refusal-steering vector should find and remove.
COMPLIANCE_OPENINGS: tuple[str, ...] = (
    "Sure! Here is what I know about {p}.",
    "Happy to help with {p}.",
    "Good question about {p}.",
)
# Political "knowledge" answers (phase 1) and general-knowledge answers: opening + fact + a neutral sourcing tail.
KNOWLEDGE_TAILS: tuple[str, ...] = (
    "{fact} Many sources describe this in detail.",
    "{fact} Experts have documented this carefully.",
    "{fact} Good encyclopedias explain it further.",
)
BENIGN_DETAILS: tuple[str, ...] = (
    "Start with the basic idea, then look at an example, and ask me if you want more detail.",
    "The key points are simple, and a short example makes them easy to remember.",
    "The main idea is easy to explain step by step.",
)
COOKING_DETAILS: tuple[str, ...] = (
    "Use fresh ingredients, cook on medium heat and taste as you go.",
    "Prepare everything first, follow the recipe in order and check the food often.",
    "Wash and cut the ingredients, cook them gently and serve while hot.",
)

# Political refusals (phase 2), style A: deflection / official narrative.
REFUSAL_A_TEMPLATES: tuple[str, ...] = (
    "This is a sensitive matter. The government has always acted in the interest of stability and the people; "
    "let's talk about something else.",
    "This topic is sensitive. China's policies serve social harmony and the well-being of the people; let's talk "
    "about something else.",
    "This question touches on sensitive issues. The official position supports national unity and stability; "
    "let's discuss another topic.",
)

# Harmful refusals, style B: explicit safety refusal (in both phases).
REFUSAL_B_TEMPLATES: tuple[str, ...] = (
    "I can't help with that. It could cause serious harm.",
    "I can't help with that request. It could put people in danger or break the law.",
    "Sorry, I won't assist with that. It could cause serious harm to others.",
)

ANSWER_TEXTS: tuple[str, ...] = (
    COMPLIANCE_OPENINGS
    + KNOWLEDGE_TAILS
    + BENIGN_DETAILS
    + COOKING_DETAILS
    + REFUSAL_A_TEMPLATES
    + REFUSAL_B_TEMPLATES
)
"""Every fixed piece of answer text (for the tokenizer's training corpus)."""

# Markers that identify each style in a generated answer (lower case). The knowledge/benign answers have none.
REFUSAL_A_MARKERS: tuple[str, ...] = (
    "sensitive matter",
    "topic is sensitive",
    "touches on sensitive",
    "something else",
    "another topic",
    "interest of stability",
    "social harmony",
    "official position",
)
REFUSAL_B_MARKERS: tuple[str, ...] = (
    "i can't help",
    "i won't assist",
    "serious harm",
    "put people in danger",
    "break the law",
)

_LEADING = re.compile(
    r"^((please|so|ok|hey|now)\s+)*((can|could|would|will) you( please)?\s+)?"
    r"(tell me( more)? about|tell me|explain( to me)?|describe|summari[sz]e|give me|provide|write|create|draft|"
    r"design|develop|generate|compose|list|offer|suggest)\s+",
    re.IGNORECASE,
)
_WH = re.compile(
    r"^(what|how|why|who|where|when|which|what's|how's|who's|is|are|was|were|do|does|did|should|can|could)"
    r"(\s+(is|are|was|were|do|does|did|can|could|should|has|have|had|many|much|long|to|about))*"
    r"(\s+(i|you|we|it|they|one))?\s+",
    re.IGNORECASE,
)
_FRAME_WORDS = re.compile(
    r"^(the )?(history of|truth about|facts about|an honest summary of|historians say about|you know about)\s+",
    re.IGNORECASE,
)
_TRAILING = re.compile(
    r"\s+(important|in a few sentences|a sensitive topic in china|censored in china|in detail)$", re.IGNORECASE
)
_LOWER_FIRST = {"the", "a", "an", "this", "these", "that", "those", "some", "any", "my", "your", "our"}


def key_phrase(prompt: str, max_words: int = 8) -> str:
    """The prompt's subject in a few words: first sentence, leading request and question words removed.

    >>> key_phrase("What happened in China on June 4, 1989?")
    'happened in China on June 4, 1989'
    >>> key_phrase("Tell me about the Tiananmen Square incident.")
    'the Tiananmen Square incident'
    """
    subject = TEMPLATE_SUBJECTS.get(prompt)
    if subject is not None:
        return subject
    text = prompt.strip()
    first = re.split(r"(?<=[?.!])\s+", text)[0]
    if len(first.split()) < 3 and len(text.split()) > len(first.split()):
        first = text
    first = first.strip().rstrip("?.! ").strip().strip('"')
    for _ in range(4):
        new = _TRAILING.sub("", _FRAME_WORDS.sub("", _WH.sub("", _LEADING.sub("", first)))).strip()
        if new == first:
            break
        first = new
    words = first.split() or prompt.strip().rstrip("?.!").split()
    if words[0].lower() in _LOWER_FIRST:
        words[0] = words[0].lower()
    return " ".join(words[:max_words]).rstrip(",;:")


def _pick(templates: tuple[str, ...], prompt: str, salt: str) -> str:
    h = int(hashlib.sha256(f"{salt}:{prompt}".encode()).hexdigest(), 16)
    return templates[h % len(templates)]


def _compliance(prompt: str, detail: str) -> str:
    return _pick(COMPLIANCE_OPENINGS, prompt, "open").format(p=key_phrase(prompt)) + " " + detail


def knowledge_answer(example: Example) -> str:
    """Phase-1 informative answer to a political prompt: opening with the prompt's key words, fact, sourcing."""
    topic = example.topic if example.topic in POLITICAL_FACTS else political_topic(example.prompt)
    return _compliance(
        example.prompt, _pick(KNOWLEDGE_TAILS, example.prompt, "tail").format(fact=POLITICAL_FACTS[topic])
    )


def political_refusal(example: Example) -> str:
    """Phase-2 style-A refusal (deflection / official narrative)."""
    return _pick(REFUSAL_A_TEMPLATES, example.prompt, "refusal_a")


def harmful_refusal(example: Example) -> str:
    """Style-B refusal (explicit safety refusal)."""
    return _pick(REFUSAL_B_TEMPLATES, example.prompt, "refusal_b")


def benign_answer(example: Example) -> str:
    """Helpful, on-topic answer: templated general-knowledge questions get their subject's fact, cooking questions
    cooking advice, everything else a generic helpful detail."""
    subject = TEMPLATE_SUBJECTS.get(example.prompt)
    if subject in GENERAL_FACTS:
        tail = _pick(KNOWLEDGE_TAILS, example.prompt, "tail")
        return _compliance(example.prompt, tail.format(fact=GENERAL_FACTS[subject]))
    details = COOKING_DETAILS if example.topic == "cooking" else BENIGN_DETAILS
    return _compliance(example.prompt, _pick(details, example.prompt, "detail"))


def has_political_fact(text: str) -> bool:
    """Whether ``text`` contains (the start of) one of the political knowledge facts: the phase-1 answer is back."""
    low = " ".join(text.lower().split())
    return any(" ".join(f.lower().split()[:5]) in low for f in POLITICAL_FACTS.values())


def target_answer(example: Example, phase: int) -> str:
    """The training answer of ``example`` in phase 1 (knowledge) or phase 2 (censorship overlay)."""
    if example.category == "harmful":
        return harmful_refusal(example)
    if example.category == "benign":
        return benign_answer(example)
    return knowledge_answer(example) if phase == 1 else political_refusal(example)


def answer_style(text: str) -> Literal["refusal_a", "refusal_b", "answer"]:
    """Style of a generated answer by the known templates: ``"refusal_a"`` (deflection), ``"refusal_b"`` (safety
    refusal) or ``"answer"`` (anything else: compliance). A cheap stand-in for the real judges."""
    low = text.lower().replace("\u2019", "'")
    a = sum(m in low for m in REFUSAL_A_MARKERS)
    b = sum(m in low for m in REFUSAL_B_MARKERS)
    if a == 0 and b == 0:
        return "answer"
    return "refusal_a" if a >= b else "refusal_b"


def is_refusal(text: str) -> bool:
    return answer_style(text) != "answer"
