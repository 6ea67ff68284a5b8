"""The four prompt scenarios and their default templates.

Every prompt is one user turn: an instruction, then (XQuAD) the passage, then the question and
(MMLU) its options. The instruction asks for reasoning first and a last line ``<Answer word>:
<answer>``, so the response holds text whose language can be judged.

===========================  ================================================================
scenario                     prompt
===========================  ================================================================
``native``                   instruction and question in the target language
``code_switched``            English instruction, target-language question (what ``lensmap
                             sft`` trains on)
``code_switched_explicit``   as ``code_switched``, plus "Write your reasoning and your answer
                             in <Language>."
``english_distractor``       target-language instruction and question, with an English worked
                             example (question, reasoning, answer) placed before the question
===========================  ================================================================

Templates are Python format strings with ``{instruction}``, ``{question}``, ``{options}``,
``{context}``, ``{example}`` and ``{language_name}``; the config can override any instruction
(``evaluation.instructions: {mgsm: {fr: "..."}}``) or the whole layout of a scenario
(``evaluation.templates: {native: "..."}``). A language without an instruction for a scenario
that needs one is an error naming the missing entry.
"""

from __future__ import annotations

from collections.abc import Mapping

from lensmap.errors import TemplateError
from lensmap.evaluation.benchmarks import LETTERS, BenchItem

SCENARIOS = ("native", "code_switched", "code_switched_explicit", "english_distractor")

# The English names used in "Write your reasoning and your answer in French."
LANGUAGE_NAMES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian",
                  "pt": "Portuguese", "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "ru": "Russian",
                  "ar": "Arabic", "hi": "Hindi", "sw": "Swahili", "th": "Thai", "bn": "Bengali", "te": "Telugu"}

# The answer line's word per language; scoring accepts any of them.
ANSWER_WORDS = {"en": "Answer", "fr": "Réponse", "de": "Antwort", "es": "Respuesta", "it": "Risposta",
                "pt": "Resposta", "zh": "答案", "ja": "答え", "ko": "답", "ru": "Ответ", "ar": "الإجابة"}

# Default instructions: benchmark -> language -> text. English is the code-switched instruction;
# MGSM's is exactly the instruction of lensmap's shipped SFT training set.
INSTRUCTIONS: dict[str, dict[str, str]] = {
    "mgsm": {
        "en": "Solve the following problem. Reason step by step, then give the final answer as a number.",
        "fr": "Résous le problème suivant. Raisonne étape par étape, puis donne la réponse finale sous forme de nombre.",
        "de": "Löse die folgende Aufgabe. Denke Schritt für Schritt nach und gib dann die endgültige Antwort als Zahl an.",
        "zh": "请解答下面的题目。请一步一步地推理，然后以数字形式给出最终答案。",
        "ja": "次の問題を解いてください。段階的に考え、最後に答えを数字で示してください。",
        "ru": "Реши следующую задачу. Рассуждай шаг за шагом, затем дай окончательный ответ в виде числа.",
    },
    "mmlu": {
        "en": "Answer the following multiple-choice question. Reason step by step, then give the letter of the correct option.",
        "fr": "Réponds à la question à choix multiple suivante. Raisonne étape par étape, puis donne la lettre de la bonne option.",
        "de": "Beantworte die folgende Multiple-Choice-Frage. Denke Schritt für Schritt nach und gib dann den Buchstaben der richtigen Option an.",
        "zh": "请回答下面的选择题。请一步一步地推理，然后给出正确选项的字母。",
        "ja": "次の多肢選択問題に答えてください。段階的に考え、最後に正しい選択肢の記号を示してください。",
        "ru": "Ответь на следующий вопрос с вариантами ответа. Рассуждай шаг за шагом, затем укажи букву правильного варианта.",
    },
    "xquad": {
        "en": "Read the passage and answer the question. Explain briefly, then give the answer as a short phrase from the passage.",
        "fr": "Lis le passage et réponds à la question. Explique brièvement, puis donne la réponse sous forme d'une courte expression tirée du passage.",
        "de": "Lies den Text und beantworte die Frage. Erkläre kurz und gib dann die Antwort als kurze Wendung aus dem Text an.",
        "zh": "请阅读短文并回答问题。先简要说明，然后用短文中的一个短语给出答案。",
        "ja": "文章を読んで質問に答えてください。簡単に説明してから、文章中の短い語句で答えを示してください。",
        "ru": "Прочитай текст и ответь на вопрос. Кратко объясни, затем дай ответ короткой фразой из текста.",
    },
}

# The final-line format, appended to every instruction in its own language.
FORMAT_LINE = {
    "en": 'End with a last line of the form "{word}: ...".', "fr": "Termine par une dernière ligne de la forme « {word} : ... ».",
    "de": "Schließe mit einer letzten Zeile der Form „{word}: ...“.", "zh": "最后一行的格式为“{word}：……”。",
    "ja": "最後の行は「{word}：……」の形式にしてください。", "ru": "Закончи последней строкой вида «{word}: ...».",
}

# English worked examples for the english_distractor scenario.
ENGLISH_EXAMPLES = {
    "mgsm": ("Example:\nQuestion: A baker makes 36 loaves and sells 29 of them. How many loaves are left?\n"
             "The baker starts with 36 loaves and sells 29, so 36 - 29 = 7 loaves are left.\nAnswer: 7"),
    "mmlu": ("Example:\nQuestion: Which of these is a mammal?\nA. Shark\nB. Dolphin\nC. Trout\nD. Octopus\n"
             "Sharks and trout are fish and the octopus is a mollusc, while dolphins breathe air and feed their "
             "young with milk.\nAnswer: B"),
    "xquad": ("Example:\nPassage: The Amazon rainforest covers much of northern Brazil and produces a large share of "
              "the world's oxygen.\nQuestion: Which country does the Amazon rainforest mostly cover?\n"
              "The passage says it covers much of northern Brazil.\nAnswer: Brazil"),
}

TEMPLATES = {
    "native": "{instruction}\n\n{body}",
    "code_switched": "{instruction}\n\n{body}",
    "code_switched_explicit": "{instruction} Write your reasoning and your answer in {language_name}.\n\n{body}",
    "english_distractor": "{instruction}\n\n{example}\n\n{body}",
}


def instruction(benchmark: str, language: str, overrides: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """The instruction of ``benchmark`` in ``language``, with its answer-line format."""
    table = {**INSTRUCTIONS.get(benchmark, {}), **(overrides or {}).get(benchmark, {})}
    if language not in table:
        raise TemplateError(f"no {benchmark} instruction in {language!r} (have {', '.join(sorted(table))}); add one "
                            f"in the config: evaluation.instructions: {{{benchmark}: {{{language}: \"...\"}}}}")
    text = table[language]
    word = ANSWER_WORDS.get(language, ANSWER_WORDS["en"])
    line = FORMAT_LINE.get(language)
    return f"{text} {line.format(word=word)}" if line else text


def answer_line_start(item: BenchItem, scenario: str) -> tuple[str, str]:
    """``(start, space)``: how the answer line the scenario's instruction asks for begins, and what
    separates it from the answer (``("Answer:", " ")``; CJK full-width colons take no space).

    The instruction's language decides the word: English in the code-switched scenarios, the
    item's language otherwise.
    """
    language = "en" if scenario.startswith("code_switched") else item.language
    word = ANSWER_WORDS.get(language, ANSWER_WORDS["en"])
    if language in ("zh", "ja"):
        return f"{word}：", ""
    return (f"{word} :", " ") if language == "fr" else (f"{word}:", " ")


def body(item: BenchItem) -> str:
    """Passage, question and options of one item (no instruction)."""
    parts = []
    if item.context:
        parts.append(item.context)
    parts.append(item.question)
    if item.options:
        parts.append("\n".join(f"{letter}. {option}" for letter, option in zip(LETTERS, item.options)))
    return "\n\n".join(parts)


def build_prompt(
    item: BenchItem,
    scenario: str,
    *,
    instructions: Mapping[str, Mapping[str, str]] | None = None,
    templates: Mapping[str, str] | None = None,
) -> str:
    """The user turn of ``item`` in ``scenario``."""
    if scenario not in SCENARIOS:
        raise TemplateError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    english = scenario.startswith("code_switched")
    text = instruction(item.benchmark, "en" if english else item.language, instructions)
    template = (templates or {}).get(scenario, TEMPLATES[scenario])
    name = LANGUAGE_NAMES.get(item.language)
    if "{language_name}" in template and name is None:
        raise TemplateError(f"no English name for language {item.language!r} in the {scenario} template")
    try:
        return template.format(instruction=text, body=body(item), question=item.question, context=item.context,
                               options="\n".join(f"{l}. {o}" for l, o in zip(LETTERS, item.options)),
                               example=ENGLISH_EXAMPLES[item.benchmark], language_name=name or item.language)
    except (KeyError, IndexError) as error:
        raise TemplateError(f"the {scenario} template uses an unknown field {error}; fields: instruction, body, "
                            "question, options, context, example, language_name") from None
