"""Aligned sentences in the nine MuAViC languages (en, ar, de, el, es, fr, it, pt, ru).

A sentence is ``subject + verb phrase + place/time``, each slot a whole phrase translated once per
language, so every combination is grammatical in every language (masculine third-person singular
subjects, present tense: no agreement to compute) and the nine versions are exact translations of
each other.  Arabic, Greek and Russian are written in their own scripts.

Two spellings per language: :func:`asr_label` is the MuAViC ASR label (English LRS3-style, the
others mTEDx-normalised: lower case, no punctuation, apostrophes kept); :func:`translation_label`
is the En-X reference (capital first letter, final full stop), as MuAViC's translations keep case
and punctuation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

MULTI_LANGS = ("en", "ar", "de", "el", "es", "fr", "it", "pt", "ru")
EN_X_TARGETS = ("el", "es", "fr", "it", "pt", "ru")  # MuAViC's En->X translation targets

# one row per phrase; columns in MULTI_LANGS order
SUBJECTS = (
    ("the teacher", "المعلم", "der Lehrer", "ο δάσκαλος", "el profesor", "le professeur", "l'insegnante",
     "o professor", "учитель"),
    ("my brother", "أخي", "mein Bruder", "ο αδελφός μου", "mi hermano", "mon frère", "mio fratello",
     "o meu irmão", "мой брат"),
    ("the doctor", "الطبيب", "der Arzt", "ο γιατρός", "el médico", "le médecin", "il medico", "o médico",
     "врач"),
    ("our neighbour", "جارنا", "unser Nachbar", "ο γείτονάς μας", "nuestro vecino", "notre voisin",
     "il nostro vicino", "o nosso vizinho", "наш сосед"),
    ("the old man", "الرجل العجوز", "der alte Mann", "ο γέρος", "el anciano", "le vieil homme",
     "il vecchio", "o velho", "старик"),
    ("the student", "الطالب", "der Student", "ο φοιτητής", "el estudiante", "l'étudiant", "lo studente",
     "o estudante", "студент"),
    ("my father", "أبي", "mein Vater", "ο πατέρας μου", "mi padre", "mon père", "mio padre", "o meu pai",
     "мой отец"),
    ("the driver", "السائق", "der Fahrer", "ο οδηγός", "el conductor", "le chauffeur", "l'autista",
     "o motorista", "водитель"),
)
VERB_PHRASES = (
    ("reads a book", "يقرأ كتابا", "liest ein Buch", "διαβάζει ένα βιβλίο", "lee un libro", "lit un livre",
     "legge un libro", "lê um livro", "читает книгу"),
    ("drinks coffee", "يشرب القهوة", "trinkt Kaffee", "πίνει καφέ", "bebe café", "boit du café",
     "beve il caffè", "bebe café", "пьёт кофе"),
    ("writes a letter", "يكتب رسالة", "schreibt einen Brief", "γράφει ένα γράμμα", "escribe una carta",
     "écrit une lettre", "scrive una lettera", "escreve uma carta", "пишет письмо"),
    ("eats bread", "يأكل الخبز", "isst Brot", "τρώει ψωμί", "come pan", "mange du pain", "mangia il pane",
     "come pão", "ест хлеб"),
    ("plays the piano", "يعزف على البيانو", "spielt Klavier", "παίζει πιάνο", "toca el piano",
     "joue du piano", "suona il pianoforte", "toca piano", "играет на пианино"),
    ("waits for his friend", "ينتظر صديقه", "wartet auf seinen Freund", "περιμένει τον φίλο του",
     "espera a su amigo", "attend son ami", "aspetta il suo amico", "espera o seu amigo", "ждёт друга"),
    ("opens the window", "يفتح النافذة", "öffnet das Fenster", "ανοίγει το παράθυρο", "abre la ventana",
     "ouvre la fenêtre", "apre la finestra", "abre a janela", "открывает окно"),
    ("buys fresh fruit", "يشتري فاكهة طازجة", "kauft frisches Obst", "αγοράζει φρέσκα φρούτα",
     "compra fruta fresca", "achète des fruits frais", "compra frutta fresca", "compra fruta fresca",
     "покупает свежие фрукты"),
    ("cleans the kitchen", "ينظف المطبخ", "putzt die Küche", "καθαρίζει την κουζίνα", "limpia la cocina",
     "nettoie la cuisine", "pulisce la cucina", "limpa a cozinha", "убирает кухню"),
    ("watches the news", "يشاهد الأخبار", "sieht die Nachrichten", "βλέπει τις ειδήσεις", "ve las noticias",
     "regarde les informations", "guarda il telegiornale", "vê as notícias", "смотрит новости"),
)
ADVERBIALS = (
    ("in the garden", "في الحديقة", "im Garten", "στον κήπο", "en el jardín", "dans le jardin",
     "in giardino", "no jardim", "в саду"),
    ("every morning", "كل صباح", "jeden Morgen", "κάθε πρωί", "cada mañana", "chaque matin",
     "ogni mattina", "todas as manhãs", "каждое утро"),
    ("at home", "في البيت", "zu Hause", "στο σπίτι", "en casa", "à la maison", "a casa", "em casa", "дома"),
    ("in the evening", "في المساء", "am Abend", "το βράδυ", "por la noche", "le soir", "la sera", "à noite",
     "вечером"),
    ("at the station", "في المحطة", "am Bahnhof", "στον σταθμό", "en la estación", "à la gare",
     "alla stazione", "na estação", "на вокзале"),
    ("on sunday", "يوم الأحد", "am Sonntag", "την Κυριακή", "el domingo", "le dimanche", "la domenica",
     "no domingo", "в воскресенье"),
    ("in the office", "في المكتب", "im Büro", "στο γραφείο", "en la oficina", "au bureau", "in ufficio",
     "no escritório", "в офисе"),
    ("after lunch", "بعد الغداء", "nach dem Mittagessen", "μετά το μεσημεριανό", "después del almuerzo",
     "après le déjeuner", "dopo pranzo", "depois do almoço", "после обеда"),
)
SLOTS = (SUBJECTS, VERB_PHRASES, ADVERBIALS)
N_SENTENCES = len(SUBJECTS) * len(VERB_PHRASES) * len(ADVERBIALS)


@dataclass(frozen=True)
class Sentence:
    """One sentence as slot indices; spelled in any of :data:`MULTI_LANGS`."""

    idx: tuple[int, int, int]

    def words(self, lang: str) -> str:
        """The plain sentence in ``lang`` (the phrases joined, as written in the tables)."""
        col = MULTI_LANGS.index(lang)
        return " ".join(slot[i][col] for slot, i in zip(SLOTS, self.idx))


def asr_label(sentence: Sentence, lang: str) -> str:
    """The ASR label: lower case, no punctuation (LRS3 style for en, mTEDx-normalised otherwise)."""
    from whisper_flamingo.data.label_norm import normalize_line

    return normalize_line(sentence.words(lang), lang)


def translation_label(sentence: Sentence, lang: str) -> str:
    """The En->X reference: the sentence with a capital first letter and a full stop."""
    text = sentence.words(lang)
    return text[0].upper() + text[1:] + "."


def sample_sentences(rng: random.Random, n: int, exclude: set[tuple[int, int, int]] | None = None
                     ) -> list[Sentence]:
    """``n`` distinct sentences not in ``exclude`` (which is updated), drawn with ``rng``.

    When the grammar runs out of unused combinations, sentences repeat (with a warning-free
    reuse: the callers size the corpus; :data:`N_SENTENCES` combinations exist).
    """
    used = exclude if exclude is not None else set()
    out: list[Sentence] = []
    for _ in range(n):
        for _ in range(200):
            idx = tuple(rng.randrange(len(slot)) for slot in SLOTS)
            if idx not in used:
                break
        used.add(idx)
        out.append(Sentence(idx))
    return out


def babble_text(rng: random.Random, lang: str, min_words: int) -> str:
    """A long run of sentences in ``lang`` (for babble sources), at least ``min_words`` words."""
    words: list[str] = []
    while len(words) < min_words:
        s = Sentence(tuple(rng.randrange(len(slot)) for slot in SLOTS))
        words += s.words(lang).split()
    return " ".join(words)
