"""The EvalAI / VQA answer normalisation and the 10-answer soft accuracy (TextVQA scoring, VizWiz submission).

Reproduces `EvalAIAnswerProcessor` and `TextVQAAccuracyEvaluator` of LLaVA's `m4c_evaluator.py` step by step,
quirks included (they change scores, so they are kept on purpose and marked below).
"""
from __future__ import annotations

import re
from typing import Sequence

# Fixed spellings of contractions written without an apostrophe. Verbatim table of the EvalAI processor: some
# keys can never match after lower-casing ("Im", "Ive", "Id've") and "somebody'd" maps to "somebodyd"; kept
# as is because the official scorer has them.
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've",
    "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's",
    "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}
# "none" -> "0" is part of the official map (so "none" and "zero" both match "0").
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
# Punctuation handled by process_punctuation; ' : $ % # & * and . are not in it (periods have their own rule).
PUNCTUATIONS = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
                ",", "?", "!")
# "(?!<=\d)" is a typo upstream for a look-behind; as written it is a look-ahead that always passes, so every
# "." not followed by a digit is removed.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")
# Upstream calls PERIOD_STRIP.sub("", text, re.UNICODE): the third positional argument of sub() is `count`,
# and re.UNICODE == 32, so at most 32 periods are removed.
_PERIOD_STRIP_COUNT = int(re.UNICODE)
# The soft score divides matches by 3: three annotators agreeing make an answer fully right.
_FULL_CREDIT_MATCHES = 3


def normalize_vqa_answer(answer: str) -> str:
    """EvalAIAnswerProcessor.__call__: tokenize, punctuation, number words, articles, contractions."""
    text = _word_tokenize(answer)
    text = text.replace("\n", " ").replace("\t", " ").strip()
    text = _process_punctuation(text)
    return _process_digits_and_articles(text)


def _word_tokenize(text: str) -> str:
    text = text.lower()
    text = text.replace(",", "").replace("?", "").replace("'s", " 's")
    return text.strip()


def _process_punctuation(in_text: str) -> str:
    out_text = in_text
    has_digit_comma = _COMMA_STRIP.search(in_text) is not None  # never true: commas are already gone
    for mark in PUNCTUATIONS:
        # A mark next to a space is deleted; one inside a word ("t-shirt") becomes a space.
        if mark + " " in in_text or " " + mark in in_text or has_digit_comma:
            out_text = out_text.replace(mark, "")
        else:
            out_text = out_text.replace(mark, " ")
    return _PERIOD_STRIP.sub("", out_text, count=_PERIOD_STRIP_COUNT)


def _process_digits_and_articles(in_text: str) -> str:
    words = []
    for word in in_text.lower().split():
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            words.append(word)
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def soft_scores(gt_answers: Sequence[str]) -> dict[str, float]:
    """Score of every distinct (normalised) human answer: the mean over the 10 leave-one-out subsets of
    min(1, matches / 3). Returns {normalised answer: score}; any other prediction scores 0."""
    normalized = [normalize_vqa_answer(a) for a in gt_answers]
    scores = {}
    for candidate in set(normalized):
        subset_scores = []
        for left_out in range(len(normalized)):
            matches = sum(1 for i, a in enumerate(normalized) if i != left_out and a == candidate)
            subset_scores.append(min(1.0, matches / _FULL_CREDIT_MATCHES))
        scores[candidate] = sum(subset_scores) / len(subset_scores)
    return scores


def soft_accuracy(prediction: str, gt_answers: Sequence[str]) -> float:
    """VQA soft accuracy in [0, 1] of one prediction against its (10) human answers."""
    return soft_scores(gt_answers).get(normalize_vqa_answer(prediction), 0.0)
