"""A small generative grammar of English sentences with aligned French and Spanish translations.

Sentences follow a handful of templates (subject-verb-object with place and time, intransitive,
copula, modal, "there is", "where is" and "what did" questions) over the closed vocabulary of
:mod:`.lexicon`, in three tenses with optional negation.  Every choice is made once and realised
in each language by its own rules (agreement, French elision and contraction, Spanish preterite),
so the translations are grammar-level exact: good enough references for BLEU.

English is written the way LRS3 labels are (lower case, apostrophes only); translations keep
accents, capitals and punctuation, as MuAViC's En-X labels do.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from functools import lru_cache

from whisper_flamingo.preparation.synthetic import lexicon

LANGS = ("fr", "es")  # supported En-X target languages
PERSONS = ("1s", "3s", "1p", "3p")
_PIDX = {p: i for i, p in enumerate(PERSONS)}


# ----------------------------------------------------------------------------------------------
# lexicon parsing


def _rows(block: str) -> list[list[str]]:
    return [[f.strip() for f in line.split(";")] for line in block.strip().splitlines() if line.strip()]


def _fr_pl(word: str) -> str:
    if word.endswith(("s", "x", "z")):
        return word
    if word.endswith("eau"):
        return word + "x"
    if word.endswith("al"):
        return word[:-2] + "aux"
    return word + "s"


def _es_pl(word: str) -> str:
    if word[-1] in "aeiouáéó":
        return word + "s"
    if word.endswith("z"):
        return word[:-1] + "ces"
    return word + "es"


def _es_preterite(inf: str) -> tuple[str, str, str, str]:
    """Regular Spanish preterite (1s, 3s, 1p, 3p) with the -car/-gar/-zar spelling changes."""
    stem, end = inf[:-2], inf[-2:]
    if end == "ar":
        first = stem + "é"
        if stem.endswith("c"):
            first = stem[:-1] + "qué"
        elif stem.endswith("g"):
            first = stem + "ué"
        elif stem.endswith("z"):
            first = stem[:-1] + "cé"
        return first, stem + "ó", stem + "amos", stem + "aron"
    return stem + "í", stem + "ió", stem + "imos", stem + "ieron"


@dataclass(frozen=True)
class Noun:
    en: str
    en_pl: str | None  # None: a mass noun (no plural, no "a")
    fr: tuple[str, str]
    fr_g: str
    es: tuple[str, str]
    es_g: str
    kinds: frozenset[str]

    @property
    def mass(self) -> bool:
        return self.en_pl is None


@dataclass(frozen=True)
class Adj:
    en: str
    fr: tuple[str, str, str, str]  # m, f, m pl, f pl
    es: tuple[str, str, str, str]
    kinds: frozenset[str]
    pre: bool = False  # French prenominal
    alt: str | None = None  # French masc. sg. form before a vowel
    estar: bool = False  # Spanish copula

    def form(self, lang: str, gender: str, plural: bool) -> str:
        forms = self.fr if lang == "fr" else self.es
        return forms[(2 if plural else 0) + (1 if gender == "f" else 0)]


@dataclass(frozen=True)
class Verb:
    en: tuple[str, str, str]  # base, 3s, past
    fr_inf: str
    fr: tuple[str, str, str, str]  # present 1s 3s 1p 3p
    fr_pp: str
    es_inf: str
    es: tuple[str, str, str, str]
    es_pret: tuple[str, str, str, str]
    obj_kinds: frozenset[str]  # empty: not transitive
    subj_kinds: frozenset[str]  # subjects of the intransitive use; empty: not intransitive


@dataclass(frozen=True)
class Phrase:
    en: str
    fr: str
    es: str
    tags: frozenset[str]


def _split_forms(field_: str) -> list[str]:
    return [f.strip() for f in field_.split("|")]


@lru_cache(maxsize=1)
def vocabulary() -> dict[str, list]:
    """Parse the lexicon tables once: ``{"nouns": [...], "adjs": [...], ...}``."""
    nouns = []
    for en, fr, es, kinds in _rows(lexicon.NOUNS):
        ef, ff, sf = _split_forms(en), _split_forms(fr), _split_forms(es)
        if len(ef) == 1:  # mass noun
            nouns.append(Noun(ef[0], None, (ff[0], ff[0]), ff[1], (sf[0], sf[0]), sf[1],
                              frozenset(kinds.split())))
        else:
            nouns.append(Noun(ef[0], ef[1], (ff[0], ff[1]), ff[2], (sf[0], sf[1]), sf[2],
                              frozenset(kinds.split())))
    adjs = []
    for en, fr, es, kinds, flags in _rows(lexicon.ADJECTIVES):
        ff, sf = _split_forms(fr), _split_forms(es)
        if len(ff) == 2:
            ff += [_fr_pl(ff[0]), ff[1] + "s"]
        if len(sf) == 2:
            sf += [_es_pl(sf[0]), _es_pl(sf[1])]
        fl = flags.split()
        alt = next((f[4:] for f in fl if f.startswith("alt=")), None)
        adjs.append(Adj(en, tuple(ff), tuple(sf), frozenset(kinds.split()), "pre" in fl, alt,
                        "estar" in fl))
    verbs = []
    for en, fr, es, obj, subj in _rows(lexicon.VERBS):
        ef, ff, sf = _split_forms(en), _split_forms(fr), _split_forms(es)
        pret = tuple(sf[6:10]) if len(sf) >= 10 else _es_preterite(sf[0])
        verbs.append(Verb(tuple(ef), ff[0], tuple(ff[1:5]), ff[5], sf[0], tuple(sf[1:5]), pret,
                          frozenset(obj.split()) - {"-"}, frozenset(subj.split()) - {"-"}))
    advs = [Phrase(en, fr, es, frozenset(fl.split())) for en, fr, es, fl in _rows(lexicon.ADVERBS)]
    places = [Phrase(en, fr, es, frozenset(t.split())) for en, fr, es, t in _rows(lexicon.PLACES)]
    times = [Phrase(en, fr, es, frozenset(t.split())) for en, fr, es, t in _rows(lexicon.TIMES)]
    return {"nouns": nouns, "adjs": adjs, "verbs": verbs, "advs": advs, "places": places,
            "times": times}


# ----------------------------------------------------------------------------------------------
# closed-class words

_FR_AVOIR = ("ai", "a", "avons", "ont")
_FR_ALLER = ("vais", "va", "allons", "vont")
_ES_IR = ("voy a", "va a", "vamos a", "van a")
_EN_BE = {"pres": ("am", "is", "are", "are"), "past": ("was", "was", "were", "were")}
_EN_BE_NEG = {"pres": ("am not", "isn't", "aren't", "aren't"),
              "past": ("wasn't", "wasn't", "weren't", "weren't")}
_FR_ETRE = {"pres": ("suis", "est", "sommes", "sont"), "past": ("étais", "était", "étions", "étaient")}
_ES_SER = {"pres": ("soy", "es", "somos", "son"), "past": ("era", "era", "éramos", "eran")}
_ES_ESTAR = {"pres": ("estoy", "está", "estamos", "están"),
             "past": ("estaba", "estaba", "estábamos", "estaban")}
# modal: en (pres 1/3s, past, neg pres, neg past) and fr/es present and imperfect
_MODALS = {
    "want": {"en": ("want to", "wants to", "wanted to"), "fr": {
        "pres": ("veux", "veut", "voulons", "veulent"),
        "past": ("voulais", "voulait", "voulions", "voulaient")}, "es": {
        "pres": ("quiero", "quiere", "queremos", "quieren"),
        "past": ("quería", "quería", "queríamos", "querían")}},
    "can": {"en": ("can", "can", "could"), "fr": {
        "pres": ("peux", "peut", "pouvons", "peuvent"),
        "past": ("pouvais", "pouvait", "pouvions", "pouvaient")}, "es": {
        "pres": ("puedo", "puede", "podemos", "pueden"),
        "past": ("podía", "podía", "podíamos", "podían")}},
}
_PRONOUNS = {  # key: (person, gender, en, fr, es)
    "i": ("1s", "m", "i", "je", "yo"),
    "we": ("1p", "m", "we", "nous", "nosotros"),
    "he": ("3s", "m", "he", "il", "él"),
    "she": ("3s", "f", "she", "elle", "ella"),
    "they": ("3p", "m", "they", "ils", "ellos"),
}
_VOWELS = "aeiouyâàäéèêëîïôöûùœh"


def _starts_vowel(word: str) -> bool:
    return bool(word) and word[0].lower() in _VOWELS


# ----------------------------------------------------------------------------------------------
# noun phrases


@dataclass(frozen=True)
class NP:
    """A noun phrase: determiner, optional adjective, noun, number."""

    noun: Noun
    det: str  # the a my our his her this two three four some many every
    adj: Adj | None = None
    plural: bool = False

    @property
    def person(self) -> str:
        return "3p" if self.plural else "3s"

    def gender(self, lang: str) -> str:
        return self.noun.fr_g if lang == "fr" else self.noun.es_g

    def realise(self, lang: str) -> str:
        n, pl, adj = self.noun, self.plural, self.adj
        if lang == "en":
            noun = n.en_pl if pl else n.en
            words = [adj.en, noun] if adj else [noun]
            det = {"this": "these" if pl else "this", "a": "an" if _starts_vowel(words[0]) else "a"
                   }.get(self.det, self.det)
            return " ".join([det, *words])
        g = self.gender(lang)
        noun = (n.fr if lang == "fr" else n.es)[1 if pl else 0]
        if lang == "fr":
            pre = post = ""
            if adj is not None:
                form = adj.form("fr", g, pl)
                if adj.pre and adj.alt and g == "m" and not pl and _starts_vowel(noun):
                    form = adj.alt
                pre, post = (form, "") if adj.pre else ("", form)
            nxt = pre or noun
            det = _fr_det(self.det, g, pl, n.mass, nxt)
            return " ".join(w for w in (det, pre, noun, post) if w)
        det = _es_det(self.det, g, pl, n.mass)
        post = adj.form("es", g, pl) if adj else ""
        return " ".join(w for w in (det, noun, post) if w)


def _fr_det(det: str, g: str, pl: bool, mass: bool, nxt: str) -> str:
    v = _starts_vowel(nxt)
    if det == "the":
        return "les" if pl else ("la" if g == "f" else "le")  # le/la + vowel: elided later
    if det == "a":
        return "une" if g == "f" else "un"
    if det in ("my", "his", "her"):
        p = "m" if det == "my" else "s"
        return f"{p}es" if pl else (f"{p}a" if g == "f" and not v else f"{p}on")
    if det == "our":
        return "nos" if pl else "notre"
    if det == "this":
        return "ces" if pl else ("cette" if g == "f" else ("cet" if v else "ce"))
    if det == "some":
        return "des" if pl else ("de la" if g == "f" else "de le")  # de le -> du later
    if det == "many":
        return "beaucoup de"
    if det == "every":
        return "chaque"
    return {"two": "deux", "three": "trois", "four": "quatre"}[det]


def _es_det(det: str, g: str, pl: bool, mass: bool) -> str:
    f = g == "f"
    if det == "the":
        return ("las" if f else "los") if pl else ("la" if f else "el")
    if det == "a":
        return "una" if f else "un"
    if det == "my":
        return "mis" if pl else "mi"
    if det in ("his", "her"):
        return "sus" if pl else "su"
    if det == "our":
        return "nuestr" + ("a" if f else "o") + ("s" if pl else "")
    if det == "this":
        return ("estas" if f else "estos") if pl else ("esta" if f else "este")
    if det == "some":
        return ("unas" if f else "unos") if pl else "un poco de"
    if det == "many":
        return "muchas" if f else "muchos"
    if det == "every":
        return "cada"
    return {"two": "dos", "three": "tres", "four": "cuatro"}[det]


# ----------------------------------------------------------------------------------------------
# subjects and verb groups


@dataclass(frozen=True)
class Subject:
    person: str
    np: NP | None = None
    pronoun: str | None = None

    def gender(self, lang: str) -> str:
        if self.np is not None:
            return self.np.gender(lang)
        return _PRONOUNS[self.pronoun][1]

    def realise(self, lang: str) -> str:
        if self.np is not None:
            return self.np.realise(lang)
        return _PRONOUNS[self.pronoun][{"en": 2, "fr": 3, "es": 4}[lang]]


def _verb_group(lang: str, v: Verb, person: str, tense: str, neg: bool, inner: str = "") -> str:
    """Finite verb group of ``v`` (with a French 'inner' adverb placed inside it)."""
    i = _PIDX[person]
    if lang == "en":
        base, s3, past = v.en
        if tense == "fut":
            return ("won't " if neg else "will ") + base
        if tense == "past":
            return "didn't " + base if neg else past
        if neg:
            return ("doesn't " if person == "3s" else "don't ") + base
        return s3 if person == "3s" else base
    if lang == "fr":
        finite, rest = {"pres": (v.fr[i], ""), "past": (_FR_AVOIR[i], v.fr_pp),
                        "fut": (_FR_ALLER[i], v.fr_inf)}[tense]
        words = ["ne", finite, "pas"] if neg else [finite]
        return " ".join(w for w in (*words, inner, rest) if w)
    form = {"pres": v.es[i], "past": v.es_pret[i], "fut": f"{_ES_IR[i]} {v.es_inf}"}[tense]
    return ("no " if neg else "") + form


def _infinitive(lang: str, v: Verb) -> str:
    return {"en": v.en[0], "fr": v.fr_inf, "es": v.es_inf}[lang]


def _modal_group(lang: str, m: str, person: str, tense: str, neg: bool) -> str:
    i = _PIDX[person]
    spec = _MODALS[m]
    if lang == "en":
        if m == "can":
            return ("couldn't" if neg else "could") if tense == "past" else ("can't" if neg else "can")
        if neg:
            return ("didn't" if tense == "past" else ("doesn't" if person == "3s" else "don't")) + " want to"
        return spec["en"][2] if tense == "past" else spec["en"][1 if person == "3s" else 0]
    form = spec[lang][tense][i]
    if lang == "fr":
        return f"ne {form} pas" if neg else form
    return f"no {form}" if neg else form


def _copula(lang: str, person: str, tense: str, neg: bool, adj: Adj) -> str:
    i = _PIDX[person]
    if lang == "en":
        if tense == "fut":
            return "won't be" if neg else "will be"
        return (_EN_BE_NEG if neg else _EN_BE)[tense][i]
    if lang == "fr":
        finite, rest = (_FR_ALLER[i], "être") if tense == "fut" else (_FR_ETRE[tense][i], "")
        words = ["ne", finite, "pas"] if neg else [finite]
        return " ".join(w for w in (*words, rest) if w)
    table = _ES_ESTAR if adj.estar else _ES_SER
    form = f"{_ES_IR[i]} {'estar' if adj.estar else 'ser'}" if tense == "fut" else table[tense][i]
    return ("no " if neg else "") + form


# ----------------------------------------------------------------------------------------------
# sentences


@dataclass(frozen=True)
class Sentence:
    """An English sentence (LRS3 style) with its translations ``{lang: text}``."""

    en: str
    translations: dict[str, str] = field(default_factory=dict)
    template: str = ""

    @property
    def n_words(self) -> int:
        return len(self.en.split())


_FR_ELIDE = re.compile(r"\b(je|le|la|de|ne|que|me|se)\s+(?=[" + _VOWELS + r"])", re.IGNORECASE)
_FR_CONTRACT = [(re.compile(r"\bà le\b"), "au"), (re.compile(r"\bà les\b"), "aux"),
                (re.compile(r"\bde le\b"), "du"), (re.compile(r"\bde les\b"), "des")]
_ES_CONTRACT = [(re.compile(r"\ba el\b"), "al"), (re.compile(r"\bde el\b"), "del")]


def _finish(lang: str, words: list[str], question: bool) -> str:
    text = " ".join(w for w in words if w)
    text = re.sub(r"\s+", " ", text).strip()
    if lang == "en":
        return text.lower()
    if lang == "fr":
        text = _FR_ELIDE.sub(lambda m: m.group(1)[:-1] + "'", text)
        for pat, rep in _FR_CONTRACT:
            text = pat.sub(rep, text)
        text = text[0].upper() + text[1:]
        return text + (" ?" if question else ".")
    for pat, rep in _ES_CONTRACT:
        text = pat.sub(rep, text)
    text = text[0].upper() + text[1:]
    return f"¿{text}?" if question else text + "."


class SentenceGenerator:
    """Draw random sentences with aligned translations from a seeded :class:`random.Random`.

    ``min_words``/``max_words`` bound the English length (resampled until it fits).
    """

    TEMPLATES = (("transitive", 0.36), ("intransitive", 0.2), ("copula", 0.12), ("modal", 0.14),
                 ("there", 0.07), ("where", 0.05), ("what", 0.06))

    def __init__(self, rng: random.Random, langs: tuple[str, ...] = LANGS, min_words: int = 4,
                 max_words: int = 12) -> None:
        unknown = [lang for lang in langs if lang not in LANGS]
        if unknown:
            raise ValueError(f"unsupported target language(s) {unknown}; supported: {list(LANGS)}")
        self.rng, self.langs = rng, tuple(langs)
        self.min_words, self.max_words = min_words, max_words
        self.v = vocabulary()

    # -- small helpers
    def _pick(self, items):
        return items[self.rng.randrange(len(items))]

    def _weighted(self, pairs):
        r, acc = self.rng.random() * sum(w for _, w in pairs), 0.0
        for item, w in pairs:
            acc += w
            if r < acc:
                return item
        return pairs[-1][0]

    def _np(self, kinds: frozenset[str], role: str, p_adj: float = 0.35) -> NP:
        noun = self._pick([n for n in self.v["nouns"] if n.kinds & kinds])
        plural = (not noun.mass) and self.rng.random() < 0.3
        if role == "subject":
            dets = [("the", 5), ("my", 2), ("our", 1), ("his", 0.5), ("her", 0.5), ("this", 0.7)]
            dets += [("two", 0.6), ("three", 0.3)] if plural else [("a", 0.8), ("every", 0.2)]
        elif role == "definite":
            dets = [("the", 5), ("my", 2), ("our", 1), ("his", 0.6), ("her", 0.6), ("this", 0.8)]
        else:  # object / existential
            dets = [("the", 4), ("my", 1.2), ("our", 0.6), ("his", 0.5), ("her", 0.5), ("this", 0.6)]
            if noun.mass:
                dets += [("some", 1.5)]
            elif plural:
                dets += [("two", 1), ("three", 0.6), ("four", 0.3), ("some", 1), ("many", 0.5)]
            else:
                dets += [("a", 3)]
            if role == "existential":
                dets = [d for d in dets if d[0] in ("a", "two", "three", "four", "some", "many")]
        if role == "subject" and noun.mass:
            dets = [d for d in dets if d[0] in ("the", "this", "my", "our")]
        det = self._weighted(dets)
        adj = None
        if self.rng.random() < p_adj:
            cands = [a for a in self.v["adjs"] if a.kinds & noun.kinds]
            adj = self._pick(cands) if cands else None
        return NP(noun, det, adj, plural)

    def _subject(self, kinds: frozenset[str], p_pronoun: float = 0.25, third: bool = False) -> Subject:
        if self.rng.random() < p_pronoun and "person" in kinds:
            keys = ["he", "she", "they"] + ([] if third else ["i", "we"])
            key = self._pick(keys)
            return Subject(_PRONOUNS[key][0], pronoun=key)
        np = self._np(kinds & frozenset({"person", "animal"}) or kinds, "subject")
        return Subject(np.person, np=np)

    def _time(self, tense: str, p: float) -> Phrase | None:
        if self.rng.random() >= p:
            return None
        return self._pick([t for t in self.v["times"] if tense in t.tags])

    def _place(self, kind: str, p: float) -> Phrase | None:
        if self.rng.random() >= p:
            return None
        return self._pick([t for t in self.v["places"] if kind in t.tags])

    def _tense(self) -> str:
        return self._weighted([("pres", 0.3), ("past", 0.42), ("fut", 0.28)])

    # -- templates: each returns {lang: words} and whether it is a question
    def _transitive(self):
        verb = self._pick([v for v in self.v["verbs"] if v.obj_kinds])
        kinds = frozenset({"person", "animal"}) if verb.en[0] in ("eat", "drink", "see", "find") \
            else frozenset({"person"})
        subj = self._subject(kinds)
        tense, neg = self._tense(), self.rng.random() < 0.15
        obj = self._np(verb.obj_kinds, "definite" if neg else "object", p_adj=0.45)
        advs = [a for a in self.v["advs"] if "trans" in a.tags
                and ("plural" not in a.tags or subj.person in ("1p", "3p"))]
        adv = self._pick(advs) if self.rng.random() < 0.15 else None
        place = self._place("scene", 0.45)
        time = self._time(tense, 0.5)
        out = {}
        for lang in ("en", *self.langs):
            vg = _verb_group(lang, verb, subj.person, tense, neg)
            out[lang] = [subj.realise(lang), vg, obj.realise(lang), _f(adv, lang), _f(place, lang),
                         _f(time, lang)]
        return out, False

    def _intransitive(self):
        verb = self._pick([v for v in self.v["verbs"] if v.subj_kinds])
        subj = self._subject(verb.subj_kinds)
        tense, neg = self._tense(), self.rng.random() < 0.15
        advs = [a for a in self.v["advs"] if "plural" not in a.tags or subj.person in ("1p", "3p")]
        adv = self._pick(advs) if self.rng.random() < 0.4 else None
        place = self._place("scene", 0.6)
        time = self._time(tense, 0.5)
        out = {}
        for lang in ("en", *self.langs):
            inner = _f(adv, lang) if lang == "fr" and adv is not None and "inner" in adv.tags else ""
            vg = _verb_group(lang, verb, subj.person, tense, neg, inner)
            after = "" if inner else _f(adv, lang)
            out[lang] = [subj.realise(lang), vg, after, _f(place, lang), _f(time, lang)]
        return out, False

    def _copula(self):
        if self.rng.random() < 0.55:
            subj = self._subject(frozenset({"person", "animal"}), p_pronoun=0.35)
        else:
            np = self._np(frozenset({"thing", "vehicle", "container", "food", "drink", "fixed"}),
                          "definite", p_adj=0.0)
            subj = Subject(np.person, np=np)
        kinds = subj.np.noun.kinds if subj.np is not None else frozenset({"person"})
        adj = self._pick([a for a in self.v["adjs"] if a.kinds & kinds])
        tense, neg = self._tense(), self.rng.random() < 0.2
        time = self._time(tense, 0.45)
        plural = subj.person in ("1p", "3p")
        out = {}
        for lang in ("en", *self.langs):
            pred = adj.en if lang == "en" else adj.form(lang, subj.gender(lang), plural)
            out[lang] = [subj.realise(lang), _copula(lang, subj.person, tense, neg, adj), pred,
                         _f(time, lang)]
        return out, False

    def _modal(self):
        modal = self._pick(["want", "can"])
        transitive = self.rng.random() < 0.6
        verbs = [v for v in self.v["verbs"] if (v.obj_kinds if transitive else v.subj_kinds)]
        verb = self._pick(verbs)
        subj = self._subject(frozenset({"person"}) if transitive else verb.subj_kinds, p_pronoun=0.35)
        tense = "past" if self.rng.random() < 0.35 else "pres"
        neg = self.rng.random() < 0.25
        obj = self._np(verb.obj_kinds, "definite" if neg else "object", p_adj=0.4) if transitive else None
        place = self._place("scene", 0.45)
        time = self._time(tense, 0.3)
        out = {}
        for lang in ("en", *self.langs):
            out[lang] = [subj.realise(lang), _modal_group(lang, modal, subj.person, tense, neg),
                         _infinitive(lang, verb), obj.realise(lang) if obj else "", _f(place, lang),
                         _f(time, lang)]
        return out, False

    def _there(self):
        np = self._np(frozenset({"thing", "container", "food", "drink", "animal", "text"}),
                      "existential", p_adj=0.5)
        past = self.rng.random() < 0.4
        place = self._place("spot" if "animal" not in np.noun.kinds else "scene", 1.0)
        time = self._time("past", 0.4) if past else None
        en = ("there was" if not np.plural else "there were") if past else \
            ("there is" if not np.plural else "there are")
        out = {"en": [en, np.realise("en"), place.en, _f(time, "en")]}
        for lang in self.langs:
            head = {"fr": ("il y avait", "il y a"), "es": ("había", "hay")}[lang][0 if past else 1]
            out[lang] = [head, np.realise(lang), _f(place, lang), _f(time, lang)]
        return out, False

    def _where(self):
        np = self._np(frozenset({"person", "animal", "thing", "vehicle", "container", "text"}),
                      "definite", p_adj=0.3)
        out = {"en": ["where", "are" if np.plural else "is", np.realise("en")]}
        for lang in self.langs:
            if lang == "fr":
                out[lang] = ["où", "sont" if np.plural else "est", np.realise(lang)]
            else:
                out[lang] = ["dónde", "están" if np.plural else "está", np.realise(lang)]
        return out, True

    def _what(self):
        verb = self._pick([v for v in self.v["verbs"] if v.obj_kinds])
        subj = self._subject(frozenset({"person"}), p_pronoun=0.3, third=True)
        tense = "past" if self.rng.random() < 0.6 else "fut"
        place = self._place("scene", 0.5)
        time = self._time(tense, 0.4)
        i = _PIDX[subj.person]
        aux = "did" if tense == "past" else "will"
        out = {"en": ["what", aux, subj.realise("en"), verb.en[0], _f(place, "en"), _f(time, "en")]}
        for lang in self.langs:
            if lang == "fr":
                vg = f"{_FR_AVOIR[i]} {verb.fr_pp}" if tense == "past" else f"{_FR_ALLER[i]} {verb.fr_inf}"
                out[lang] = ["qu'est-ce que", subj.realise(lang), vg, _f(place, lang), _f(time, lang)]
            else:
                vg = verb.es_pret[i] if tense == "past" else f"{_ES_IR[i]} {verb.es_inf}"
                out[lang] = ["qué", vg, subj.realise(lang), _f(place, lang), _f(time, lang)]
        return out, True

    def sample(self) -> Sentence:
        """One sentence whose English has ``min_words..max_words`` words."""
        for _ in range(1000):
            template = self._weighted(self.TEMPLATES)
            words, question = getattr(self, "_" + template)()
            en = _finish("en", words["en"], question)
            if self.min_words <= len(en.split()) <= self.max_words:
                tr = {lang: _finish(lang, words[lang], question) for lang in self.langs}
                return Sentence(en, tr, template)
        raise ValueError(f"no sentence of {self.min_words}..{self.max_words} words; widen the range")


def _f(phrase: Phrase | None, lang: str) -> str:
    return "" if phrase is None else getattr(phrase, lang)


def english_vocabulary() -> set[str]:
    """Every English word type the grammar can produce (for documentation and tests)."""
    v = vocabulary()
    words: set[str] = set()
    for n in v["nouns"]:
        words.update([n.en] + ([n.en_pl] if n.en_pl else []))
    for a in v["adjs"]:
        words.add(a.en)
    for verb in v["verbs"]:
        words.update(verb.en)
    for group in ("advs", "places", "times"):
        for p in v[group]:
            words.update(p.en.split())
    words.update("a an the my our his her this these two three four some many every i we he she they "
                 "will won't didn't doesn't don't am is are was were isn't aren't wasn't weren't not "
                 "be can can't could couldn't want wants wanted to there where what did".split())
    return words
