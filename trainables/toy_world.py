"""The toy world: a tiny fact language rendered in English and three derived languages.

A fact is "NAME VERB the ADJ NOUN in the PLACE". English is the source. The derived languages have
their own invented vocabularies (seeded), share only the anchors (person names, city names, digits):
  de  Latin script, same word order (SVO)
  ru  Cyrillic script, same word order (SVO)
  hi  Devanagari script, verb-final (SOV) with postpositions ("the park in")
Every token carries its UPOS tag and a CCG-style supertag, so tagging tasks come for free.
Used by `trainables.toy`; see that module for the tasks and the planted transfer structure.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = ["anna", "boris", "carla", "dmitri", "elena", "farid", "greta", "hugo", "ines", "jonas", "kira",
         "leon", "mira", "nils", "olga", "pavel", "rosa", "sami", "tara", "viktor"]
CITIES = ["paris", "lima", "oslo", "cairo", "delhi", "quito", "tokyo", "riga"]
NOUNS = ["dog", "cat", "horse", "bird", "fish", "fox", "bear", "wolf", "goat", "mouse", "lion", "duck"]
ACTIONS = {"dog": "barks", "cat": "meows", "horse": "gallops", "bird": "flies", "fish": "swims", "fox": "hunts",
           "bear": "sleeps", "wolf": "howls", "goat": "climbs", "mouse": "hides", "lion": "roars", "duck": "quacks"}
ADJS = ["red", "blue", "green", "black", "white", "small", "big", "old", "young", "quick"]
VERBS = ["sees", "feeds", "follows", "paints", "finds", "buys", "sells", "draws"]
PLACES = ["park", "city", "forest", "river", "market", "garden", "village", "school"]
POSITIVE = ["good", "happy", "kind", "nice"]
NEGATIVE = ["bad", "sad", "angry", "cruel"]
FUNCTION = ["the", "in", "does", "not", "who", "what", "where", "then", "is", "works", "for", "corp", "bank",
            "which", "animal", "do", "?", "."]
CONTENT = NOUNS + list(ACTIONS.values()) + ADJS + VERBS + PLACES + POSITIVE + NEGATIVE

UPOS_OF = {**{w: "NOUN" for w in NOUNS + PLACES + ["animal"]}, **{w: "VERB" for w in VERBS + list(ACTIONS.values())},
           **{w: "ADJ" for w in ADJS + POSITIVE + NEGATIVE}, "the": "DET", "in": "ADP", "for": "ADP",
           "does": "AUX", "do": "AUX", "is": "AUX", "not": "PART", "who": "PRON", "what": "PRON",
           "where": "ADV", "which": "DET", "then": "ADV", "works": "VERB", "corp": "PROPN", "bank": "PROPN",
           "?": "PUNCT", ".": "PUNCT"}
LANGS = ("en", "de", "ru", "hi")
_CYRILLIC = dict(zip("bdfgklmnprstvzaeiou", "бдфгклмнпрствзаеиоу"))
_DEVANAGARI_C = dict(zip("bdfgklmnprstvz", "बदफगकलमनपरसतवज"))
_DEVANAGARI_V = {"a": "", "e": "े", "i": "ि", "o": "ो", "u": "ु"}


@dataclass(frozen=True)
class Token:
    word: str  # the English key; rendered through a language's lexicon
    upos: str
    ccg: str


def _syllable_words(rng: random.Random, n: int) -> list[str]:
    seen, out = set(), []
    while len(out) < n:
        word = "".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(rng.choice((2, 2, 3))))
        if word not in seen:
            seen.add(word)
            out.append(word)
    return out


def _script(word: str, lang: str) -> str:
    if lang == "ru":
        return "".join(_CYRILLIC[c] for c in word)
    if lang == "hi":
        return "".join(_DEVANAGARI_C[word[i]] + _DEVANAGARI_V[word[i + 1]] for i in range(0, len(word), 2))
    return word


def build_lexicons(seed: int) -> dict[str, dict[str, str]]:
    """English key -> word, per language. Anchors (names, cities, digits, punctuation) are shared."""
    keys = CONTENT + [w for w in FUNCTION if w not in "?."]
    lexicons = {"en": {k: k for k in keys}}
    for i, lang in enumerate(LANGS[1:]):
        words = _syllable_words(random.Random(seed * 100 + i), len(keys))
        lexicons[lang] = {k: _script(w, lang) for k, w in zip(keys, words)}
    return lexicons


class World:
    """Renders token lists in each language; `rng` draws facts."""

    def __init__(self, seed: int):
        self.seed = seed
        self.lex = build_lexicons(seed)

    def word(self, token: str, lang: str) -> str:
        return self.lex[lang].get(token, token)  # names, cities, digits, punctuation pass through

    def render(self, tokens: list[Token], lang: str) -> list[str]:
        return [self.word(t.word, lang) for t in tokens]

    def text(self, tokens: list[Token], lang: str) -> str:
        return " ".join(self.render(tokens, lang))


def T(word: str, ccg: str, upos: str | None = None) -> Token:
    return Token(word, upos or UPOS_OF.get(word, "PROPN"), ccg)


def clause(lang: str, subj: str, verb: str, obj: list[Token], place: str | None = None, neg: bool = False,
           end: str = ".") -> list[Token]:
    """SUBJ (does not) VERB OBJ (in the PLACE) — or, verb-final: SUBJ OBJ (the PLACE in) (not) VERB."""
    s = [T(subj, "NP", "PROPN")]
    loc = location(lang, place) if place else []
    negation = [T("does", "(S\\NP)/(S\\NP)"), T("not", "(S\\NP)\\(S\\NP)")] if neg else []
    v = [T(verb, "(S\\NP)/NP")]
    tail = [T(end, end)] if end else []
    if lang == "hi":  # verb-final
        return s + obj + loc + negation[1:] + v + tail
    return s + negation + v + obj + loc + tail


def location(lang: str, place: str) -> list[Token]:
    """"in the PLACE"; postpositional in the verb-final language ("the PLACE in")."""
    loc = [T("in", "((S\\NP)\\(S\\NP))/NP"), T("the", "NP/N"), T(place, "N")]
    return loc[1:] + loc[:1] if lang == "hi" else loc


def noun_phrase(adj: str | None, noun: str) -> list[Token]:
    return [T("the", "NP/N")] + ([T(adj, "N/N")] if adj else []) + [T(noun, "N")]


def random_fact(rng: random.Random, **fixed) -> dict:
    fact = {"subj": rng.choice(NAMES), "verb": rng.choice(VERBS), "adj": rng.choice(ADJS),
            "noun": rng.choice(NOUNS), "place": rng.choice(PLACES)}
    fact.update(fixed)
    return fact


def fact_tokens(fact: dict, lang: str, place: bool = True, neg: bool = False, end: str = ".") -> list[Token]:
    return clause(lang, fact["subj"], fact["verb"], noun_phrase(fact["adj"], fact["noun"]),
                  fact["place"] if place else None, neg, end)


def other(rng: random.Random, pool: list[str], avoid: str) -> str:
    return rng.choice([x for x in pool if x != avoid])
