"""The toy benchmark: every task of the table, in its Hub schema, generated from a seed in seconds.

Run:  xstilts data toy --out toy_data        (then: xstilts data inspect xnli --data-dir toy_data --json)

Languages: en (source) and de, ru (Cyrillic), hi (Devanagari, verb-final); see `trainables.toy_world`.
Each task's languages are its XTREME list intersected with these (XNLI: en de ru hi; PAWS-X: en de; …),
and `xstilts.json` says so. Also written: `mlm/corpus.txt` (multilingual, partly code-switched, for
phase 1), `mlm/parallel.tsv` (language, sentence, English translation: the toy model's alignment steps)
and `tokenizer/` (an XLM-R-style Unigram tokenizer trained on the corpus).

Planted transfer structure (which intermediate task teaches the skill a target needs):
  mnli, anli_plus -> xnli     same 3-way relation: same facts = entailment, changed adjective or "does not"
                              = contradiction, another person = neutral
  qqp             -> pawsx    word-order paraphrase: swapping who-does-what flips the label (PAWS-style)
  squad_v1/v2     -> xquad, mlqa, tydiqa   span extraction: who / what / where questions over 3 facts
  ccg             -> udpos    same sentences, finer syntactic categories of the same words
  sst2, hellaswag, cosmosqa, commonsenseqa -> (no target: controls; the MC tasks share animal facts)
  (retrieval)     -> bucc2018, tatoeba   no task teaches it: the toy model is aligned in phase 1 (translation-
                              ranking steps on mlm/parallel.tsv); intermediate training keeps or disturbs that
                              alignment (a high learning rate disturbs it: the planted harm)
Target English training sets are small (200 examples) so that intermediate training can matter. The effects
measured on the recorded grid (benchmarks/records/toy_grid.json) are tabled in docs/toy-world.md.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from trainables.tasks import NLI_LABELS, PANX_TAGS, TASKS, UPOS, TATOEBA_ISO3
from trainables.toy_world import (ACTIONS, ADJS, CITIES, VERBS, location, LANGS, NAMES, NEGATIVE, NOUNS, PLACES, POSITIVE, T, World,
                                  clause, fact_tokens, noun_phrase, other, random_fact)

SIZES = {"intermediate": 3000, "target_train": 200, "eval": 200}


def task_langs(task: str) -> list[str]:
    return [l for l in TASKS[task].languages if l in LANGS]


# ---------------------------------------------------------------- example generators (one row, Hub schema)


def nli_row(w: World, rng: random.Random, lang: str, hard: bool = False) -> dict:
    fact = random_fact(rng)
    label = rng.randrange(3)
    hyp = dict(fact)
    neg = False
    if label == 1:  # neutral: someone else, about whom the premise says nothing
        hyp["subj"] = other(rng, NAMES, fact["subj"])
    elif label == 2:  # contradiction: a changed adjective, or the same fact negated
        if rng.random() < 0.5:
            hyp["adj"] = other(rng, ADJS, fact["adj"])
        else:
            neg = True
    if hard and label == 2 and rng.random() < 0.5:  # ANLI-style: the place changes instead
        hyp, neg = dict(fact, place=other(rng, PLACES, fact["place"])), False
    return {"premise": w.text(fact_tokens(fact, lang), lang),
            "hypothesis": w.text(fact_tokens(hyp, lang, place=hard, neg=neg), lang), "label": label}


def paraphrase_row(w: World, rng: random.Random, lang: str, question: bool = False) -> tuple[str, str, int]:
    a, b = rng.sample(NAMES, 2)
    verb, place = rng.choice(VERBS), rng.choice(PLACES)
    label = rng.randrange(2)

    def sentence(subj: str, obj: str, fronted: bool) -> str:
        person = [T(obj, "NP", "PROPN")]
        toks = (location(lang, place) + clause(lang, subj, verb, person, None, end="") if fronted
                else clause(lang, subj, verb, person, place, end=""))
        return w.text(([T("does", "X", "AUX")] if question else []) + toks + [T("?" if question else ".", ".")], lang)

    subj, obj = (a, b) if label == 1 else (b, a)  # swapped roles: the same words, another meaning
    return sentence(a, b, False), sentence(subj, obj, rng.random() < 0.5), label


def qa_row(w: World, rng: random.Random, lang: str, uid: str, unanswerable: float = 0.0, title: bool = True) -> dict:
    facts = [random_fact(rng, subj=s) for s in rng.sample(NAMES, 4)]
    asked, context_facts = facts[0], facts[1:]
    if rng.random() >= unanswerable:
        asked = context_facts[rng.randrange(3)]
    answerable = asked in context_facts
    pieces, spans = [], {}
    for fact in context_facts:  # render, remembering character offsets of the answer candidates
        for tok in fact_tokens(fact, lang):
            start = sum(len(p) + 1 for p in pieces)
            word = w.word(tok.word, lang)
            pieces.append(word)
            if fact is asked:
                spans.setdefault(tok.word, (start, word))
    context = " ".join(pieces)
    kind = rng.choice(("who", "what", "where"))
    if kind == "who":
        q = [T("who", "X")] + ([T("the", "X"), T(asked["adj"], "X"), T(asked["noun"], "X"), T(asked["verb"], "X")]
                               if lang == "hi" else [T(asked["verb"], "X"), T("the", "X"), T(asked["adj"], "X"), T(asked["noun"], "X")])
        answer_keys = [asked["subj"]]
    elif kind == "what":
        q = clause(lang, asked["subj"], asked["verb"], [T("what", "X")], None, end="")
        answer_keys = [asked["adj"], asked["noun"]]
    else:
        q = clause(lang, asked["subj"], asked["verb"], noun_phrase(asked["adj"], asked["noun"]), None, end="")
        q = [T("where", "X")] + q
        answer_keys = [asked["place"]]
    question = w.text(q + [T("?", "?")], lang)
    answers = {"text": [], "answer_start": []}
    if answerable:
        start = spans[answer_keys[0]][0]
        last_start, last_word = spans[answer_keys[-1]]
        answers = {"text": [context[start:last_start + len(last_word)]], "answer_start": [start]}
    row = {"id": uid, "context": context, "question": question, "answers": answers}
    return {"id": uid, "title": "toy", **row} if title else row


def tagged_sentence(w: World, rng: random.Random, lang: str) -> tuple[list[str], list[str], list[str]]:
    fact = random_fact(rng)
    tokens = fact_tokens(fact, lang, place=rng.random() < 0.7, neg=rng.random() < 0.3)
    return w.render(tokens, lang), [t.upos for t in tokens], [t.ccg for t in tokens]


def ner_sentence(w: World, rng: random.Random, lang: str) -> tuple[list[str], list[int]]:
    person, org, city = rng.choice(NAMES), rng.choice(NAMES), rng.choice(CITIES)
    suffix = rng.choice(["corp", "bank"])
    parts = [([person], ["B-PER"]), ([w.word("works", lang)], ["O"]), ([w.word("for", lang)], ["O"]),
             ([org, w.word(suffix, lang)], ["B-ORG", "I-ORG"]), ([w.word("in", lang)], ["O"]), ([city], ["B-LOC"])]
    if lang == "hi":  # verb-final: PERSON ORG for CITY in works
        parts = [parts[0], parts[3], parts[2], parts[5], parts[4], parts[1]]
    tokens = [t for p in parts for t in p[0]] + ["."]
    tags = [PANX_TAGS.index(t) for p in parts for t in p[1]] + [0]
    return tokens, tags


def sentiment_row(w: World, rng: random.Random) -> dict:
    label = rng.randrange(2)
    word = rng.choice(POSITIVE if label else NEGATIVE)
    noun = rng.choice(NOUNS)
    toks = noun_phrase(rng.choice(ADJS), noun) + [T("is", "X"), T(word, "X"), T(".", ".")]
    return {"sentence": w.text(toks, "en"), "label": label}


def choice_facts(rng: random.Random, n: int) -> tuple[str, list[str], int]:
    noun = rng.choice(NOUNS)
    wrong = rng.sample([ACTIONS[x] for x in NOUNS if x != noun], n - 1)
    label = rng.randrange(n)
    return noun, wrong[:label] + [ACTIONS[noun]] + wrong[label:], label


# ---------------------------------------------------------------- files per task, in the local layout


def _rows(n: int, make) -> list[dict]:
    return [make(i) for i in range(n)]


def intermediate_files(w: World, seed: int) -> dict[str, list[dict]]:
    n, ev = SIZES["intermediate"], SIZES["eval"]
    rng = random.Random(seed + 1)
    files: dict[str, list[dict]] = {}

    def nli(i, hard=False):
        return nli_row(w, rng, "en", hard)

    for split, size in (("train", n), ("validation_matched", ev)):
        files[f"nyu-mll/glue/mnli/{split}"] = _rows(size, lambda i: {**nli(i), "idx": i})
    for r in (1, 2, 3):
        for split, size in ((f"train_r{r}", n // 6), (f"dev_r{r}", ev // 2), (f"test_r{r}", ev // 2)):
            files[f"facebook/anli/plain_text/{split}"] = _rows(
                size, lambda i: {"uid": f"r{r}-{split}-{i}", **nli(i, hard=True), "reason": ""})
    for split, size in (("train", n // 2), ("validation", ev), ("test", ev)):
        # SNLI marks pairs without a gold label as -1; the loader must drop them.
        files[f"stanfordnlp/snli/plain_text/{split}"] = _rows(
            size, lambda i: {**nli(i), **({"label": -1} if i % 20 == 7 else {})})
    for split, size in (("train", n), ("validation", ev)):
        files[f"nyu-mll/glue/qqp/{split}"] = _rows(size, lambda i: dict(
            zip(("question1", "question2", "label"), paraphrase_row(w, rng, "en", question=True)), idx=i))
        files[f"nyu-mll/glue/sst2/{split}"] = _rows(size, lambda i: {**sentiment_row(w, rng), "idx": i})
        files[f"rajpurkar/squad/plain_text/{split}"] = _rows(size, lambda i: qa_row(w, rng, "en", f"sq1-{split}-{i}"))
        files[f"rajpurkar/squad_v2/squad_v2/{split}"] = _rows(
            size, lambda i: qa_row(w, rng, "en", f"sq2-{split}-{i}", unanswerable=1 / 3))
        files[f"Rowan/hellaswag/default/{split}"] = _rows(size, lambda i: _hellaswag(w, rng, i, split))
        files[f"allenai/cosmos_qa/default/{split}"] = _rows(size // 2, lambda i: _cosmos(w, rng, i))
        files[f"tau/commonsense_qa/default/{split}"] = _rows(size // 3, lambda i: _csqa(w, rng, i))
    for split, size in (("train", n), ("validation", ev), ("test", ev)):
        files[f"ccgbank/default/{split}"] = _rows(size, lambda i: dict(
            zip(("tokens", "_", "tags"), tagged_sentence(w, rng, "en")), _=None))
    for rows in (files[f"ccgbank/default/{s}"] for s in ("train", "validation", "test")):
        for row in rows:
            row.pop("_")
    return files


def _hellaswag(w: World, rng: random.Random, i: int, split: str) -> dict:
    fact = random_fact(rng)
    noun, endings, label = choice_facts(rng, 4)
    fact["noun"] = noun
    ctx_a, ctx_b = w.text(fact_tokens(fact, "en"), "en"), f"then the {noun}"
    return {"ind": i, "activity_label": "toy", "ctx_a": ctx_a, "ctx_b": ctx_b, "ctx": f"{ctx_a} {ctx_b}",
            "endings": [f"{e} ." for e in endings], "source_id": f"toy-{i}", "split": split,
            "split_type": "indomain", "label": str(label)}


def _cosmos(w: World, rng: random.Random, i: int) -> dict:
    fact = random_fact(rng)
    noun, answers, label = choice_facts(rng, 4)
    fact["noun"] = noun
    return {"id": f"cosmos-{i}", "context": w.text(fact_tokens(fact, "en"), "en"),
            "question": f"what does the {noun} do ?", **{f"answer{k}": a for k, a in enumerate(answers)},
            "label": label}


def _csqa(w: World, rng: random.Random, i: int) -> dict:
    nouns = rng.sample(NOUNS, 5)
    label = rng.randrange(5)
    return {"id": f"csqa-{i}", "question": f"which animal {ACTIONS[nouns[label]]} ?",
            "question_concept": ACTIONS[nouns[label]], "choices": {"label": list("ABCDE"), "text": nouns},
            "answerKey": "ABCDE"[label]}


def target_files(w: World, seed: int) -> dict[str, list[dict]]:
    rng = random.Random(seed + 2)
    tr, ev = SIZES["target_train"], SIZES["eval"]
    files: dict[str, list[dict]] = {}
    for lang in task_langs("xnli"):
        for split in ("validation", "test"):
            files[f"facebook/xnli/{lang}/{split}"] = _rows(ev, lambda i: nli_row(w, rng, lang))
    for lang in task_langs("pawsx"):
        for split in (("train",) if lang == "en" else ()) + ("validation", "test"):
            files[f"google-research-datasets/paws-x/{lang}/{split}"] = _rows(
                tr if split == "train" else ev,
                lambda i: dict(zip(("sentence1", "sentence2", "label"), paraphrase_row(w, rng, lang)), id=i))
    from trainables.tasks import UDPOS_NAMES
    for lang in task_langs("udpos"):
        for split in (("train",) if lang == "en" else ()) + ("validation", "test"):
            files[f"google/xtreme/udpos.{UDPOS_NAMES[lang]}/{split}"] = _rows(
                tr if split == "train" else ev, lambda i: _udpos(w, rng, lang))
    for lang in task_langs("panx"):
        for split in (("train",) if lang == "en" else ()) + ("validation", "test"):
            files[f"google/xtreme/PAN-X.{lang}/{split}"] = _rows(
                tr if split == "train" else ev,
                lambda i: dict(zip(("tokens", "ner_tags"), ner_sentence(w, rng, lang)), langs=None))
    for path, rows in files.items():
        for row in rows:
            if "langs" in row:
                row["langs"] = [path.split("PAN-X.")[1].split("/")[0]] * len(row["tokens"])
    for lang in task_langs("xquad"):
        files[f"google/xtreme/XQuAD.{lang}/validation"] = _rows(
            ev, lambda i: qa_row(w, rng, lang, f"xquad-{lang}-{i}", title=False))
    for lang in task_langs("mlqa"):
        for split in ("validation", "test"):
            files[f"google/xtreme/MLQA.{lang}.{lang}/{split}"] = _rows(
                ev, lambda i: qa_row(w, rng, lang, f"mlqa-{lang}-{split}-{i}"))
    prefixes = {"en": "english", "ru": "russian"}
    for split, size in (("train", tr), ("validation", ev)):
        files[f"google/xtreme/tydiqa/{split}"] = [
            qa_row(w, rng, lang, f"{prefixes[lang]}-{split}-{i}")
            for lang in (["en"] if split == "train" else task_langs("tydiqa")) for i in range(size)]
    files.update(retrieval_files(w, rng))
    return files


def _udpos(w: World, rng: random.Random, lang: str) -> dict:
    tokens, upos, _ = tagged_sentence(w, rng, lang)
    return {"tokens": tokens, "pos_tags": [UPOS.index(t) for t in upos]}


def _translation(w: World, rng: random.Random, lang: str) -> tuple[str, str]:
    fact = random_fact(rng)
    return w.text(fact_tokens(fact, lang), lang), w.text(fact_tokens(fact, "en"), "en")


def retrieval_files(w: World, rng: random.Random) -> dict[str, list[dict]]:
    ev = SIZES["eval"]
    files: dict[str, list[dict]] = {}
    for lang in task_langs("tatoeba"):
        pairs = [_translation(w, rng, lang) for _ in range(ev)]
        # google/xtreme kept Tatoeba's trailing newlines; the loader strips them.
        files[f"google/xtreme/tatoeba.{TATOEBA_ISO3[lang]}/validation"] = [
            {"source_sentence": s + "\n", "target_sentence": t + "\n", "source_lang": TATOEBA_ISO3[lang],
             "target_lang": "eng"} for s, t in pairs]
    for lang in task_langs("bucc2018"):
        files[f"google/xtreme/bucc18.{lang}/validation"] = [
            {"source_sentence": s, "target_sentence": t, "source_lang": f"{lang}-{i:09d}", "target_lang": f"en-{i:09d}"}
            for i, (s, t) in enumerate(_translation(w, rng, lang) for _ in range(ev // 2))]
        # BUCC's release layout: the training corpora (XTREME's test set), then the sample corpora (the dev set);
        # both with distractors, as the real ones. (The training corpora are the draw that was mteb/BUCC's test
        # file until the test moved to the official files: every other file, and the toy's scores, stay the same.)
        for split, n in (("training", ev), ("sample", ev // 2)):
            files.update(_bucc_raw_files(lang, split, *_comparable(w, rng, lang, n)))
    return files


def _bucc_raw_files(lang: str, split: str, src: list[str], trg: list[str],
                    gold: list[list[int]]) -> dict[str, list[str]]:
    """`bucc2018/<xx>-en/<xx>-en.<split>.{xx,en,gold}`: `ID<TAB>sentence` lines per side, `xx-ID<TAB>en-ID` gold."""
    ids1, ids2 = [f"{lang}-{i + 1:09d}" for i in range(len(src))], [f"en-{j + 1:09d}" for j in range(len(trg))]
    folder = f"bucc2018/{lang}-en/{lang}-en.{split}"
    return {f"{folder}.{lang}": [f"{i}\t{s}" for i, s in zip(ids1, src)],
            f"{folder}.en": [f"{j}\t{t}" for j, t in zip(ids2, trg)],
            f"{folder}.gold": [f"{ids1[i]}\t{ids2[j]}" for i, j in gold]}


def _comparable(w: World, rng: random.Random, lang: str, n: int) -> tuple[list[str], list[str], list[list[int]]]:
    """Two shuffled corpora: n translation pairs hidden among n distractor sentences on each side."""
    gold = [_translation(w, rng, lang) for _ in range(n)]
    src = [s for s, _ in gold] + [_translation(w, rng, lang)[0] for _ in range(n)]
    trg = [t for _, t in gold] + [_translation(w, rng, lang)[1] for _ in range(n)]
    src_order, trg_order = rng.sample(range(len(src)), len(src)), rng.sample(range(len(trg)), len(trg))
    src_pos, trg_pos = {k: i for i, k in enumerate(src_order)}, {k: i for i, k in enumerate(trg_order)}
    return [src[k] for k in src_order], [trg[k] for k in trg_order], [[src_pos[k], trg_pos[k]] for k in range(n)]


def mlm_corpus(w: World, seed: int, n: int = 20000, switch: float = 0.5) -> list[str]:
    """Multilingual sentences of every form the tasks use. Cross-lingual signal, as in real pretraining data
    but denser: `switch` of the fact sentences are code-switched word by word, and a fifth of the lines are
    translation pairs (one fact in two languages), so the languages' words meet in shared contexts."""
    rng = random.Random(seed + 3)
    lines = []
    for i in range(n):
        lang = LANGS[i % len(LANGS)]
        form = rng.random()
        if form < 0.35:
            toks = fact_tokens(random_fact(rng), lang, place=rng.random() < 0.7, neg=rng.random() < 0.2)
            words = w.render(toks, lang)
            if rng.random() < switch:
                other_lang = rng.choice([l for l in LANGS if l != lang])
                words = [w.word(t.word, other_lang) if rng.random() < 0.5 else word for t, word in zip(toks, words)]
            lines.append(" ".join(words))
        elif form < 0.55:
            fact, other_lang = random_fact(rng), rng.choice([l for l in LANGS if l != lang])
            neg = rng.random() < 0.2
            lines.append(w.text(fact_tokens(fact, lang, neg=neg), lang) + " " + w.text(fact_tokens(fact, other_lang, neg=neg), other_lang))
        elif form < 0.7:
            lines.append(qa_row(w, rng, lang, "c")["question"])
        elif form < 0.8:
            lines.append(paraphrase_row(w, rng, lang)[0])
        elif form < 0.9:  # sentiment and animal-action facts (the control tasks' vocabulary)
            noun = rng.choice(NOUNS)
            word = rng.choice(POSITIVE + NEGATIVE) if rng.random() < 0.5 else ACTIONS[noun]
            toks = noun_phrase(rng.choice(ADJS), noun) + [T("is" if word not in ACTIONS.values() else "then", "X"),
                                                           T(word, "X"), T(".", ".")]
            lines.append(w.text(toks, lang) + (" which animal ? what does it do ?" if lang == "en" and rng.random() < 0.2 else ""))
        else:
            lines.append(" ".join(ner_sentence(w, rng, lang)[0]))
    return lines


def parallel_sentences(w: World, seed: int, n: int = 3000) -> list[tuple[str, str, str]]:
    """(language, sentence, its English translation): facts in every form the tasks use, for the toy model's
    alignment steps (`model.align_every`). Drawn from their own generator, so no other file changes."""
    rng = random.Random(seed + 4)
    rows = []
    for i in range(n):
        lang = LANGS[1 + i % (len(LANGS) - 1)]
        fact, place, neg = random_fact(rng), rng.random() < 0.7, rng.random() < 0.2
        rows.append((lang, w.text(fact_tokens(fact, lang, place=place, neg=neg), lang),
                     w.text(fact_tokens(fact, "en", place=place, neg=neg), "en")))
    return rows


def train_tokenizer(lines: list[str], out: Path, min_count: int = 2) -> None:
    """An XLM-R-style Unigram tokenizer with XLM-R's special-token layout — <s>=0 <pad>=1 </s>=2 <unk>=3, the
    pieces, then <mask> as the last id (XLM-R: 250001) — saved with save_pretrained. Code that told specials by an
    id range would pass on a layout with the specials at 0-4 and fail on every real XLM-R; this one catches it.

    The Unigram vocabulary is estimated directly from corpus counts: every word seen `min_count` times is a
    piece ("▁word"), every character a fallback piece, scored by log frequency. (tokenizers' UnigramTrainer
    pruned this small corpus to ~360 mostly single-character pieces, tripling sequence lengths.)
    """
    import math
    from collections import Counter

    from transformers import XLMRobertaTokenizer

    words = Counter(word for line in lines for word in line.split())
    chars = Counter(ch for word, n in words.items() for ch in word for _ in range(n))
    pieces = Counter({f"\u2581{w}": n for w, n in words.items() if n >= min_count})
    total = sum(pieces.values())
    # Fallback pieces (single characters, a bare "▁") cost 20 nats more, so a known word never splits.
    fallback = Counter(chars)
    fallback["\u2581"] = total
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(p, round(math.log(n / total), 6)) for p, n in sorted(pieces.items(), key=lambda kv: (-kv[1], kv[0]))]
    vocab += [(p, round(math.log(n / total) - 20.0, 6))
              for p, n in sorted(fallback.items(), key=lambda kv: (-kv[1], kv[0])) if p not in pieces]
    vocab += [("<mask>", 0.0)]
    XLMRobertaTokenizer(vocab=vocab).save_pretrained(str(out))


def write_toy(out: Path | str, seed: int = 0) -> Path:
    """Write the toy benchmark under `out` (local data layout + manifest + corpus + tokenizer)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    w = World(seed)
    files = {**intermediate_files(w, seed), **target_files(w, seed)}
    for key, rows in sorted(files.items()):
        if key.startswith("bucc2018/"):  # raw release files: one line each
            path = out / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(line + "\n" for line in rows), encoding="utf-8")
            continue
        path = out / f"{key}.{'jsonl' if key.startswith('ccgbank/') else 'parquet'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".jsonl":
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        else:
            pq.write_table(pa.Table.from_pylist(rows), path)
    corpus = mlm_corpus(w, seed)
    (out / "mlm").mkdir(parents=True, exist_ok=True)
    (out / "mlm" / "corpus.txt").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    (out / "mlm" / "parallel.tsv").write_text("".join("\t".join(r) + "\n" for r in parallel_sentences(w, seed)),
                                              encoding="utf-8")
    train_tokenizer(corpus, out / "tokenizer")
    manifest = {"name": "xstilts-toy", "seed": seed, "languages": list(LANGS),
                "task_languages": {t: [l for l in TASKS[t].languages if l in LANGS] for t in TASKS},
                "corpus": "mlm/corpus.txt", "parallel": "mlm/parallel.tsv", "tokenizer": "tokenizer"}
    (out / "xstilts.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return out
