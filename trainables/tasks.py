"""The task table: every intermediate and target task of xstilts, in one place.

Each task is a frozen `Task` with its kind, Hub source(s), columns, labels, languages and metric.
Behaviour elsewhere varies by `kind` (see `KINDS`), never by per-task subclasses. Names and language
codes are XTREME's own (google-research/xtreme `evaluate.py`, jiant's `LANGS_DICT`).

Print it:  xstilts tasks            (or: xstilts tasks --json)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping

from trainables.errors import XstiltsError

# Kinds decide featurisation, head, and metric shape.
KINDS = ("classification", "pair_classification", "multiple_choice", "span_qa", "tagging", "retrieval")

NLI_LABELS = ("entailment", "neutral", "contradiction")  # HF ClassLabel order for MNLI, SNLI, ANLI, XNLI
UPOS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
        "PUNCT", "SCONJ", "SYM", "VERB", "X")
PANX_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")

# XTREME_TASK2LANGS (google-research/xtreme evaluate.py); the same lists as jiant's LANGS_DICT.
XNLI_LANGS = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
PAWSX_LANGS = ("de", "en", "es", "fr", "ja", "ko", "zh")
UDPOS_LANGS = ("af", "ar", "bg", "de", "el", "en", "es", "et", "eu", "fa", "fi", "fr", "he", "hi", "hu",
               "id", "it", "ja", "kk", "ko", "mr", "nl", "pt", "ru", "ta", "te", "th", "tl", "tr", "ur",
               "vi", "yo", "zh")
# kk, th, tl, yo have no UD v2.5 dev data: test only (jiant's EXTRA_UDPOS_TEST_LANGS; google/xtreme has no
# validation split for udpos.Kazakh/Thai/Tagalog/Yoruba).
UDPOS_TEST_ONLY = ("kk", "th", "tl", "yo")
UDPOS_VALIDATION_LANGS = tuple(l for l in UDPOS_LANGS if l not in UDPOS_TEST_ONLY)
PANX_LANGS = ("ar", "he", "vi", "id", "jv", "ms", "tl", "eu", "ml", "ta", "te", "af", "nl", "en", "de",
              "el", "bn", "hi", "mr", "ur", "fa", "fr", "it", "pt", "es", "bg", "ru", "ja", "ka", "ko",
              "th", "sw", "yo", "my", "zh", "kk", "tr", "et", "fi", "hu")
XQUAD_LANGS = ("en", "es", "de", "el", "ru", "tr", "ar", "vi", "th", "zh", "hi")
MLQA_LANGS = ("en", "es", "de", "ar", "hi", "vi", "zh")
TYDIQA_LANGS = ("en", "ar", "bn", "fi", "id", "ko", "ru", "sw", "te")
BUCC_LANGS = ("de", "fr", "ru", "zh")
TATOEBA_LANGS = ("ar", "he", "vi", "id", "jv", "tl", "eu", "ml", "ta", "te", "af", "nl", "de", "el", "bn",
                 "hi", "mr", "ur", "fa", "fr", "it", "pt", "es", "bg", "ru", "ja", "ka", "ko", "th", "sw",
                 "zh", "kk", "tr", "et", "fi", "hu")

# google/xtreme names UDPOS configs by English language name, Tatoeba configs by ISO 639-3.
UDPOS_NAMES = {
    "af": "Afrikaans", "ar": "Arabic", "bg": "Bulgarian", "de": "German", "el": "Greek", "en": "English",
    "es": "Spanish", "et": "Estonian", "eu": "Basque", "fa": "Persian", "fi": "Finnish", "fr": "French",
    "he": "Hebrew", "hi": "Hindi", "hu": "Hungarian", "id": "Indonesian", "it": "Italian", "ja": "Japanese",
    "kk": "Kazakh", "ko": "Korean", "mr": "Marathi", "nl": "Dutch", "pt": "Portuguese", "ru": "Russian",
    "ta": "Tamil", "te": "Telugu", "th": "Thai", "tl": "Tagalog", "tr": "Turkish", "ur": "Urdu",
    "vi": "Vietnamese", "yo": "Yoruba", "zh": "Chinese",
}
TATOEBA_ISO3 = {
    "af": "afr", "ar": "ara", "bn": "ben", "bg": "bul", "zh": "cmn", "de": "deu", "el": "ell", "et": "est",
    "eu": "eus", "fi": "fin", "fr": "fra", "he": "heb", "hi": "hin", "hu": "hun", "id": "ind", "it": "ita",
    "jv": "jav", "ja": "jpn", "ka": "kat", "kk": "kaz", "ko": "kor", "ml": "mal", "mr": "mar", "nl": "nld",
    "fa": "pes", "pt": "por", "ru": "rus", "es": "spa", "sw": "swh", "ta": "tam", "te": "tel", "tl": "tgl",
    "th": "tha", "tr": "tur", "ur": "urd", "vi": "vie",
}
# google/xtreme `tydiqa` mixes all languages; the language is the prefix of `id` ("english-…").
TYDIQA_PREFIXES = {"arabic": "ar", "bengali": "bn", "english": "en", "finnish": "fi", "indonesian": "id",
                   "korean": "ko", "russian": "ru", "swahili": "sw", "telugu": "te"}

SQUAD_COLUMNS = ("id", "context", "question", "answers")


@dataclass(frozen=True)
class Source:
    """One dataset a task reads, on the Hub and in a local data_dir (`<data_dir>/<hub_id>/<config>/<split>`).

    `config` may hold `{lang}`, `{udpos}` (UDPOS language name) or `{iso3}` (Tatoeba code); such a source
    is read once per language. `splits` maps xstilts' split names (train/validation/test) to the Hub's.
    `reader` names the normaliser in `trainables.data` that turns one Hub row into examples of the kind.
    """

    hub_id: str
    config: str
    splits: Mapping[str, tuple[str, ...]]
    columns: tuple[str, ...]
    reader: str
    revision: str | None = None
    files: Mapping[str, str] | None = None  # raw files instead of a Hub repo (Cosmos QA): hub split -> URL
    local_only: str | None = None  # why it can only come from local files (licensed data, raw corpora)
    lang_from_id: bool = False  # TyDiQA: one config, language in the id prefix
    train_languages: tuple[str, ...] = ("en",)  # zero-shot: only English training data is ever read
    fallback: bool = False  # read a split's language only when no earlier source of the task held it
    raw: bool = False  # a raw-file layout, not `<split>.<suffix>` (BUCC: `<xx>-en.<split>.{xx,en,gold}`)
    gold_only: bool = False  # only the gold pairs, no distractors (google/xtreme bucc18.*): never test or objective

    @property
    def per_language(self) -> bool:
        return any(key in self.config for key in ("{lang}", "{udpos}", "{iso3}"))

    def config_for(self, lang: str) -> str:
        return self.config.format(lang=lang, udpos=UDPOS_NAMES.get(lang, lang), iso3=TATOEBA_ISO3.get(lang, lang))


@dataclass(frozen=True)
class Task:
    """One row of the task table."""

    name: str
    role: str  # "intermediate" | "target"
    kind: str
    description: str
    sources: tuple[Source, ...]
    metric: str
    labels: tuple[str, ...] | None = None  # None for span QA / retrieval; CCG derives its tags from data
    languages: tuple[str, ...] = ("en",)
    train_on: str | None = None  # targets: the intermediate-style task that holds the English training set
    category: str | None = None  # XTREME group (evaluate.py): classification | tagging | qa | retrieval
    text_fields: Mapping[str, str] = field(default_factory=dict)  # normalised field -> Hub column
    epochs: float | None = None  # targets: phase-3 epochs of jiant's XTREME recipe (QA 2, XNLI 2, PAWS-X 5, tagging 10)
    # Fine-tuned targets: the English examples that choose the best epoch (zero-shot model selection, never a
    # split reported as test): (task, "validation") = that task's English dev set, as jiant selects XNLI on
    # MNLI dev and XQuAD/MLQA on SQuAD v1.1 dev; (task, "holdout") = a held-out slice of its English training set.
    selection: tuple[str, str] | None = None
    split_languages: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # a split's languages, if fewer
    notes: str | None = None  # where xstilts knowingly differs from the official data or protocol

    def languages_for(self, split: str) -> tuple[str, ...]:
        """The languages a split covers (UD-POS: kk, th, tl, yo have test data only)."""
        return tuple(self.split_languages.get(split, self.languages))

    @property
    def has_validation(self) -> bool:
        """Whether a labelled split other than the reported test set exists; only such targets enter the search
        objective (XQuAD, TyDiQA-GoldP and Tatoeba have one labelled split, and XTREME reports it as test)."""
        return any("validation" in s.splits for s in self.sources)

    def to_json(self) -> dict:
        return {
            "name": self.name, "role": self.role, "kind": self.kind, "description": self.description,
            "languages": list(self.languages), "train_on": self.train_on, "metric": self.metric,
            "category": self.category, "labels": list(self.labels) if self.labels else None,
            "epochs": self.epochs, "selection": list(self.selection) if self.selection else None,
            "split_languages": {k: list(v) for k, v in self.split_languages.items()},
            "in_objective": self.role == "target" and self.has_validation, "notes": self.notes,
            "source": [_source_json(s) for s in self.sources],
        }


def _source_json(s: Source) -> dict:
    out = {"hub_id": s.hub_id, "config": s.config, "splits": {k: list(v) for k, v in s.splits.items()},
           "columns": list(s.columns)}
    if s.revision:
        out["revision"] = s.revision
    if s.files:
        out["files"] = dict(s.files)
    if s.local_only:
        out["local_only"] = s.local_only
    if s.fallback:
        out["fallback"] = True
    if s.gold_only:
        out["gold_only"] = True
    return out


def _glue(config: str, columns: tuple[str, ...], reader: str) -> Source:
    # GLUE test labels are hidden (-1), so only train and validation are usable.
    val = "validation_matched" if config == "mnli" else "validation"
    return Source("nyu-mll/glue", config, {"train": ("train",), "validation": (val,)}, columns, reader)


_NLI = ("premise", "hypothesis", "label")
MNLI_SOURCE = _glue("mnli", _NLI + ("idx",), "pair")
SQUAD_V1_SOURCE = Source("rajpurkar/squad", "plain_text", {"train": ("train",), "validation": ("validation",)},
                         ("id", "title", "context", "question", "answers"), "squad")
_NLI_FIELDS = {"text_a": "premise", "text_b": "hypothesis", "label": "label"}
_XTREME_TAGS = {"train": ("train",), "validation": ("validation",), "test": ("test",)}


def _intermediate() -> list[Task]:
    return [
        Task("anli_plus", "intermediate", "pair_classification", "ANLI r1-r3 + MNLI + SNLI (one NLI head)",
             (Source("facebook/anli", "plain_text", {"train": ("train_r1", "train_r2", "train_r3"),
                                                     "validation": ("dev_r1", "dev_r2", "dev_r3"),
                                                     "test": ("test_r1", "test_r2", "test_r3")},
                     ("uid", "premise", "hypothesis", "label", "reason"), "pair"),
              MNLI_SOURCE,
              Source("stanfordnlp/snli", "plain_text", {"train": ("train",), "validation": ("validation",),
                                                        "test": ("test",)}, _NLI, "pair")),
             "accuracy", NLI_LABELS, text_fields=_NLI_FIELDS),
        Task("mnli", "intermediate", "pair_classification", "MultiNLI (also XNLI's English training set)",
             (MNLI_SOURCE,), "accuracy", NLI_LABELS, text_fields=_NLI_FIELDS),
        Task("qqp", "intermediate", "pair_classification", "Quora Question Pairs (paraphrase)",
             (_glue("qqp", ("question1", "question2", "label", "idx"), "pair"),), "accuracy",
             ("not_duplicate", "duplicate"),
             text_fields={"text_a": "question1", "text_b": "question2", "label": "label"}),
        Task("squad_v1", "intermediate", "span_qa", "SQuAD v1.1 (also XQuAD/MLQA's English training set)",
             (SQUAD_V1_SOURCE,), "squad"),
        Task("squad_v2", "intermediate", "span_qa", "SQuAD v2.0 (with unanswerable questions)",
             (Source("rajpurkar/squad_v2", "squad_v2", {"train": ("train",), "validation": ("validation",)},
                     ("id", "title", "context", "question", "answers"), "squad"),), "squad"),
        Task("sst2", "intermediate", "classification", "SST-2 sentiment (single sentence)",
             (_glue("sst2", ("sentence", "label", "idx"), "single"),), "accuracy", ("negative", "positive"),
             text_fields={"text_a": "sentence", "label": "label"}),
        Task("hellaswag", "intermediate", "multiple_choice", "HellaSwag (4 endings)",
             # main still ships hellaswag.py, which datasets 5.x refuses; the parquet export branch loads.
             (Source("Rowan/hellaswag", "default", {"train": ("train",), "validation": ("validation",)},
                     ("ind", "activity_label", "ctx_a", "ctx_b", "ctx", "endings", "source_id", "split",
                      "split_type", "label"), "hellaswag", revision="refs/convert/parquet"),),
             "accuracy", ("0", "1", "2", "3")),
        Task("ccg", "intermediate", "tagging", "CCGbank supertagging (licensed: local files only)",
             (Source("ccgbank", "default", {"train": ("train",), "validation": ("validation",), "test": ("test",)},
                     ("tokens", "tags"), "tagging",
                     local_only="CCGbank (LDC2005T13) is licensed and not on the Hub: convert it to "
                                "<data_dir>/ccgbank/default/{train,validation,test}.jsonl with columns "
                                "tokens, tags (lists of strings)"),),
             "accuracy", None, text_fields={"tags": "tags"}),
        Task("cosmosqa", "intermediate", "multiple_choice", "Cosmos QA (4 answers)",
             # allenai/cosmos_qa is a script repo; its script only downloads these raw files.
             (Source("allenai/cosmos_qa", "default", {"train": ("train",), "validation": ("validation",)},
                     ("id", "context", "question", "answer0", "answer1", "answer2", "answer3", "label"),
                     "cosmosqa",
                     files={"train": "https://github.com/wilburOne/cosmosqa/raw/master/data/train.csv",
                            "validation": "https://github.com/wilburOne/cosmosqa/raw/master/data/valid.csv"}),),
             "accuracy", ("0", "1", "2", "3")),
        Task("commonsenseqa", "intermediate", "multiple_choice", "CommonsenseQA (5 answers)",
             (Source("tau/commonsense_qa", "default", {"train": ("train",), "validation": ("validation",)},
                     ("id", "question", "question_concept", "choices", "answerKey"), "commonsenseqa"),),
             "accuracy", ("A", "B", "C", "D", "E")),
    ]


BUCC_RAW = ("BUCC 2018's corpora are not on the Hub: download "
            "https://comparable.limsi.fr/bucc2018/bucc2018-<xx>-en.{sample,training}-gold.tar.bz2 for xx in de fr ru "
            "zh (the sample corpora are the dev split, the training corpora XTREME's test set) and extract each into "
            "<data_dir> (giving <data_dir>/bucc2018/<xx>-en/<xx>-en.{sample,training}.{xx,en,gold})")


def _targets() -> list[Task]:
    xtreme = "google/xtreme"
    # XQuAD, TyDiQA-GoldP and Tatoeba have one labelled split on the Hub ("validation"); XTREME reports it
    # as the test set, so it is read as `test` and never feeds selection or the search objective.
    only_test = {"test": ("validation",)}
    return [
        Task("xnli", "target", "pair_classification", "XNLI (trained on MNLI)",
             (Source("facebook/xnli", "{lang}", {"validation": ("validation",), "test": ("test",)},
                     ("premise", "hypothesis", "label"), "pair"),),
             "accuracy", NLI_LABELS, XNLI_LANGS, "mnli", "classification", _NLI_FIELDS, epochs=2,
             selection=("mnli", "validation")),
        Task("pawsx", "target", "pair_classification", "PAWS-X paraphrase identification",
             (Source("google-research-datasets/paws-x", "{lang}", _XTREME_TAGS,
                     ("id", "sentence1", "sentence2", "label"), "pair"),),
             "accuracy", ("0", "1"), PAWSX_LANGS, "pawsx", "classification",
             {"text_a": "sentence1", "text_b": "sentence2", "label": "label"}, epochs=5,
             selection=("pawsx", "validation")),
        Task("udpos", "target", "tagging", "Universal Dependencies v2.5 POS tagging",
             (Source(xtreme, "udpos.{udpos}", _XTREME_TAGS, ("tokens", "pos_tags"), "tagging"),),
             "f1", UPOS, UDPOS_LANGS, "udpos", "tagging", {"tags": "pos_tags"}, epochs=10,
             selection=("udpos", "validation"), split_languages={"validation": UDPOS_VALIDATION_LANGS},
             notes="google/xtreme's udpos.* keeps UD's syntactic words; XTREME's own conversion "
                   "(--replace_subtokens_with_fused_forms) replaces each multi-word token by its fused surface "
                   "form tagged with the head's UPOS (es 'del' = de+el -> 'del' ADP). Languages with multi-word "
                   "tokens (de es fr it pt ar he tr fa ...) therefore have more, shorter words here."),
        Task("panx", "target", "tagging", "PAN-X / WikiANN named entities",
             (Source(xtreme, "PAN-X.{lang}", _XTREME_TAGS, ("tokens", "ner_tags", "langs"), "tagging"),),
             "f1", PANX_TAGS, PANX_LANGS, "panx", "tagging", {"tags": "ner_tags"}, epochs=10,
             selection=("panx", "validation")),
        Task("xquad", "target", "span_qa", "XQuAD (trained on SQuAD v1.1; one labelled split, reported as test)",
             (Source(xtreme, "XQuAD.{lang}", only_test, SQUAD_COLUMNS, "squad"),),
             "squad", None, XQUAD_LANGS, "squad_v1", "qa", epochs=2, selection=("squad_v1", "validation")),
        Task("mlqa", "target", "span_qa", "MLQA, context language = question language (trained on SQuAD v1.1)",
             (Source(xtreme, "MLQA.{lang}.{lang}", {"validation": ("validation",), "test": ("test",)},
                     ("id", "title", "context", "question", "answers"), "squad"),),
             "mlqa", None, MLQA_LANGS, "squad_v1", "qa", epochs=2, selection=("squad_v1", "validation")),
        Task("tydiqa", "target", "span_qa", "TyDiQA-GoldP (English training set; one labelled split, reported as test)",
             (Source(xtreme, "tydiqa", {"train": ("train",), **only_test},
                     ("id", "title", "context", "question", "answers"), "squad", lang_from_id=True),),
             "squad", None, TYDIQA_LANGS, "tydiqa", "qa", epochs=2, selection=("tydiqa", "holdout"),
             notes="XTREME's TyDiQA test set is the GoldP dev set; epochs are selected on a held-out 10 % of the "
                   "English training set instead (jiant selects on the English dev = test set)."),
        Task("bucc2018", "target", "retrieval", "BUCC 2018 bitext mining (no training; sample corpora for dev, "
             "full training corpora for test)",
             (Source("bucc2018", "{lang}-en", {"validation": ("sample",), "test": ("training",)}, (), "bucc_raw",
                     local_only=BUCC_RAW, raw=True),
              Source(xtreme, "bucc18.{lang}", {"validation": ("validation",)},
                     ("source_sentence", "target_sentence", "source_lang", "target_lang"), "bucc_pairs",
                     fallback=True, gold_only=True),
              # the same training corpora, both sides whole by its card (de-en: 92 MB in one row); MTEB's own BUCC
              # task drops the non-gold xx sentences in its loader, not in the files. Distractors checked on load.
              Source("mteb/BUCC", "{lang}-en", {"test": ("test",)}, ("sentence1", "sentence2", "gold"),
                     "bucc_corpus", fallback=True)),
             "f1", None, BUCC_LANGS, None, "retrieval",
             notes="Test = the BUCC 2018 training corpora (XTREME's test set), read from the official files, else "
                   "from mteb/BUCC; a test corpus without distractors (only gold-aligned sentences on a side) is "
                   "refused. The F1 threshold is tuned on the dev (sample) corpora and applied to test. Without "
                   "the sample corpora, google/xtreme's bucc18.* gold pairs stand in (mining among gold pairs only "
                   "is trivial): results then say threshold_from 'gold-only dev', and a search refuses to put "
                   "bucc2018 in its objective."),
        Task("tatoeba", "target", "retrieval", "Tatoeba similarity search (no training; one labelled split, "
             "reported as test)",
             (Source(xtreme, "tatoeba.{iso3}", only_test,
                     ("source_sentence", "target_sentence", "source_lang", "target_lang"), "tatoeba"),),
             "accuracy", None, TATOEBA_LANGS, None, "retrieval"),
    ]


def _by_name(tasks: list[Task]) -> dict[str, Task]:
    table: dict[str, Task] = {}
    for task in tasks:
        if task.name in table:
            raise ValueError(f"duplicate task name in the task table: {task.name}")
        if task.kind not in KINDS:
            raise ValueError(f"task {task.name}: unknown kind {task.kind!r}; kinds are {KINDS}")
        table[task.name] = task
    return table


TASKS: dict[str, Task] = _by_name(_intermediate() + _targets())
INTERMEDIATE = tuple(t for t in TASKS if TASKS[t].role == "intermediate")
TARGETS = tuple(t for t in TASKS if TASKS[t].role == "target")
# XTREME's groups (evaluate.py GROUP2TASK), derived from the table.
CATEGORIES = {c: tuple(t for t in TARGETS if TASKS[t].category == c)
              for c in ("classification", "tagging", "qa", "retrieval")}


def get_task(name: str) -> Task:
    """The task called `name`, or a one-line error listing the valid names."""
    try:
        return TASKS[name]
    except KeyError:
        raise XstiltsError(f"unknown task {name!r} — valid tasks: {', '.join(TASKS)}") from None


def training_task(target: Task) -> Task:
    """The task whose English training split fine-tunes `target` (XNLI -> MNLI, XQuAD/MLQA -> SQuAD v1.1)."""
    return TASKS[target.train_on] if target.train_on else target


def with_sources(task: Task, sources: tuple[Source, ...]) -> Task:
    return dataclasses.replace(task, sources=sources)


def dataset_inputs(intermediate, targets, data_dir: str | None, toy: bool) -> list[dict]:
    """The task sources a run reads, as MLflow dataset inputs (trainables.tracking: `log_inputs`): one per task
    source, with context `intermediate` (the mixture's tasks) or `target` (each target and the task it trains on).
    A Hub source is `hugging_face` in MLflow's HuggingFaceDatasetSource shape (path, config_name — per-language
    configs as their template —, revision, data_dir when the files were prepared locally); the toy world, raw
    files and licensed local-only data are `local`. The digest identifies the source description and context
    (MLflow keeps one input per name and digest: MNLI read as a mixture task and for XNLI is listed twice)."""
    import hashlib
    import json

    out, seen = [], set()
    for context, names in (("intermediate", intermediate),
                           ("target", [n for t in targets for n in dict.fromkeys([t, training_task(TASKS[t]).name])])):
        for name in names:
            for s in TASKS[name].sources:
                source = {"path": s.hub_id, "config_name": s.config, "revision": s.revision}
                if s.files:
                    source["data_files"] = dict(s.files)
                if data_dir:
                    source["data_dir"] = str(data_dir)
                kind = "local" if toy or s.local_only or s.files else "hugging_face"
                text = json.dumps(source, sort_keys=True)
                key = (context, name, text)
                if key not in seen:
                    seen.add(key)
                    out.append({"name": f"{name}:{s.hub_id}/{s.config}"[:500], "context": context,
                                "digest": hashlib.sha256(f"{context} {text}".encode()).hexdigest()[:12],
                                "source_type": kind,
                                "source": text})
    return out
