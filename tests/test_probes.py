"""Probe prompt sets (CLDR translation / cloze, prompt files) and answer-token sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from babel import Locale

from lensmap.data.probes import (
    Prompt,
    cloze_probes,
    load_prompts_file,
    translation_probes,
)
from lensmap.errors import LanguageError, ProbeError
from lensmap.metrics.answers import (
    answer_first_token,
    decode_vocab_texts,
    disjoint_sets,
    prefix_index,
    word_start_token_ids,
)

# Several tests ask for more items than a probe has (n=100, n=1000) to get all of them; that now
# warns with the real number (tests/test_safety_probes.py checks the warning itself).
pytestmark = pytest.mark.filterwarnings("ignore::lensmap.errors.LensmapWarning")

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


# --------------------------------------------------------------------------- translation


def test_fr_zh_translation_format_and_answers() -> None:
    prompts = translation_probes("fr", "zh", n=1000, shots=4, seed=0)
    fr, zh, en = Locale.parse("fr"), Locale.parse("zh"), Locale.parse("en")
    assert len(prompts) > 50  # all usable curated countries
    for p in prompts:
        lines = p.text.split("\n")
        assert len(lines) == 5
        assert all(line.startswith('Français: "') for line in lines)
        assert all(' - 中文: "' in line for line in lines)
        assert lines[-1] == f'Français: "{fr.territories[p.item]}" - 中文: "'
        assert p.answer == zh.territories[p.item]  # right after the quote: no leading space
        assert p.answer_en == en.territories[p.item]
        assert (p.source, p.target, p.probe) == ("fr", "zh", "translation fr->zh territories")
    jp = next(p for p in prompts if p.item == "JP")
    assert jp.answer == "日本" and jp.answer_en == "Japan"
    assert jp.text.endswith('Français: "Japon" - 中文: "')


def test_translation_shots_never_include_query() -> None:
    fr = Locale.parse("fr")
    item_of = {fr.territories[code]: code for code in fr.territories}
    for seed in range(3):
        for p in translation_probes("fr", "zh", n=40, shots=6, seed=seed):
            shot_lines = p.text.split("\n")[:-1]
            shot_items = {item_of[line.split('"')[1]] for line in shot_lines}
            assert len(shot_items) == 6
            assert p.item not in shot_items
            assert f'"{fr.territories[p.item]}"' not in "\n".join(shot_lines)


def test_translation_seeded() -> None:
    a = translation_probes("fr", "zh", n=10, seed=1)
    b = translation_probes("fr", "zh", n=10, seed=1)
    c = translation_probes("fr", "zh", n=10, seed=2)
    assert a == b
    assert [p.text for p in a] != [p.text for p in c]


def test_translation_domains_and_skips() -> None:
    months = translation_probes("de", "en", n=100, domain="months")
    # April, August, September, November are spelt the same in German and English.
    assert {p.item for p in months} == {"jan", "feb", "mar", "may", "jun", "jul", "oct", "dec"}
    assert len(months[0].text.split("\n")) == 5
    days = translation_probes("fr", "ja", n=3, domain="weekdays", seed=0)
    ja = Locale.parse("ja")
    assert all(p.answer == ja.days["format"]["wide"][WEEKDAYS.index(p.item)] for p in days)
    langs = translation_probes("de", "ja", n=100, domain="languages")
    assert all("(" not in p.text and "（" not in p.text for p in langs)
    assert any(p.item == "fr" and p.answer == "フランス語" for p in langs)


def test_translation_errors() -> None:
    with pytest.raises(LanguageError, match="xx"):
        translation_probes("fr", "xx")
    with pytest.raises(LanguageError, match="qq"):
        translation_probes("qq", "zh")
    with pytest.raises(ProbeError, match="planets"):
        translation_probes("fr", "zh", domain="planets")
    with pytest.raises(ProbeError, match="identical"):
        translation_probes("fr", "fr")
    with pytest.raises(ProbeError):
        translation_probes("fr", "zh", n=0)


# --------------------------------------------------------------------------- cloze


def test_cloze_months_fr() -> None:
    fr, en = Locale.parse("fr"), Locale.parse("en")
    names = fr.months["format"]["wide"]
    prompts = cloze_probes("fr", n=1000, seed=0)
    assert len(prompts) == 48
    for p in prompts:
        first, rest = p.item.split("-")
        last, nxt = rest.split(">")
        i, j, k = MONTHS.index(first), MONTHS.index(last), MONTHS.index(nxt)
        assert k == (j + 1) % 12
        assert p.answer == " " + names[k + 1]
        assert p.answer_en == en.months["format"]["wide"][k + 1]
        assert p.text.endswith(names[j + 1] + ",")
        assert p.text.startswith(names[i + 1] + ", ")
        assert (p.probe, p.source, p.target) == ("cloze fr months", "", "fr")
    wrap = next(p for p in prompts if p.item == "nov-dec>jan")
    assert wrap.text == "novembre, décembre," and wrap.answer == " janvier"
    assert any(p.text == "janvier, février, mars," and p.answer == " avril" for p in prompts)


def test_cloze_weekdays_de_and_no_space_scripts() -> None:
    days = Locale.parse("de").days["format"]["wide"]
    for p in cloze_probes("de", domain="weekdays", n=100):
        nxt = WEEKDAYS.index(p.item.split(">")[1])
        assert p.answer == " " + days[nxt]
    zh = cloze_probes("zh", n=100)
    p = next(p for p in zh if p.item == "jan-mar>apr")
    assert p.text == "一月、二月、三月、" and p.answer == "四月"
    ja = next(p for p in cloze_probes("ja", n=100) if p.item == "jan-mar>apr")
    assert not ja.answer.startswith(" ") and ja.text.endswith("、")


def test_cloze_seeded_and_parallel() -> None:
    a, b = cloze_probes("fr", n=10, seed=3), cloze_probes("fr", n=10, seed=3)
    assert a == b
    assert [p.item for p in a] != [p.item for p in cloze_probes("fr", n=10, seed=4)]
    assert [p.item for p in a] == [p.item for p in cloze_probes("de", n=10, seed=3)]
    with pytest.raises(ProbeError, match="territories"):
        cloze_probes("fr", domain="territories")
    with pytest.raises(LanguageError, match="xx"):
        cloze_probes("xx")


# --------------------------------------------------------------------------- files


def test_load_jsonl_good(tmp_path: Path) -> None:
    path = tmp_path / "my_probes.jsonl"
    rows = [
        {"prompt": "janvier, février, mars,", "answer": " avril", "target": "fr", "item": 4},
        {},  # replaced by a blank line below
        {"prompt": "Paris est la capitale de la", "answer_en": "France", "probe": "capitals"},
    ]
    lines = [json.dumps(rows[0], ensure_ascii=False), "", json.dumps(rows[2], ensure_ascii=False)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    prompts = load_prompts_file(path)
    assert prompts == [
        Prompt("janvier, février, mars,", "my_probes", "", "fr", " avril", "", "4"),
        Prompt("Paris est la capitale de la", "capitals", "", "", "", "France", ""),
    ]


def test_load_csv_and_tsv_good(tmp_path: Path) -> None:
    csv_path = tmp_path / "set.csv"
    csv_path.write_text('Prompt,answer,source\n"a, b,"," c",fr\nhello, world,en\n', encoding="utf-8")
    prompts = load_prompts_file(csv_path)
    assert [(p.text, p.answer, p.source, p.probe) for p in prompts] == [
        ("a, b,", " c", "fr", "set"),
        ("hello", " world", "en", "set"),
    ]
    tsv_path = tmp_path / "set2.tsv"
    tsv_path.write_text("prompt\tanswer\n一月、二月、\t三月\n", encoding="utf-8")
    assert load_prompts_file(tsv_path)[0] == Prompt("一月、二月、", "set2", "", "", "三月")


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="does not exist"):
        load_prompts_file(tmp_path / "nope.jsonl")

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ProbeError, match="no prompts"):
        load_prompts_file(empty)
    empty_csv = tmp_path / "empty.csv"
    empty_csv.write_text("prompt,answer\n", encoding="utf-8")
    with pytest.raises(ProbeError, match="no prompts"):
        load_prompts_file(empty_csv)

    no_col = tmp_path / "nocol.csv"
    no_col.write_text("text,answer\nhello,world\n", encoding="utf-8")
    with pytest.raises(ProbeError, match="'text', 'answer'") as info:
        load_prompts_file(no_col)
    assert "nocol.csv" in str(info.value) and "'prompt'" in str(info.value)
    no_key = tmp_path / "nokey.jsonl"
    no_key.write_text('{"text": "hi"}\n', encoding="utf-8")
    with pytest.raises(ProbeError, match="text"):
        load_prompts_file(no_key)

    blank = tmp_path / "blank.csv"
    blank.write_text("prompt,answer\nok,1\n  ,2\n", encoding="utf-8")
    with pytest.raises(ProbeError, match="empty prompt on line 3"):
        load_prompts_file(blank)
    blank_json = tmp_path / "blank.jsonl"
    blank_json.write_text('{"prompt": "ok"}\n{"prompt": ""}\n', encoding="utf-8")
    with pytest.raises(ProbeError, match="line 2"):
        load_prompts_file(blank_json)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n\n{"prompt": "oops"\n', encoding="utf-8")
    with pytest.raises(ProbeError, match="malformed JSON on line 3") as info:
        load_prompts_file(bad)
    assert "bad.jsonl" in str(info.value)

    with pytest.raises(ProbeError, match=r"\.txt"):
        (tmp_path / "p.txt").write_text("x", encoding="utf-8")
        load_prompts_file(tmp_path / "p.txt")


# --------------------------------------------------------------------------- answer tokens


@pytest.fixture(scope="module")
def tok(qwen_tokenizer):
    """The real Qwen2.5 tokenizer (conftest's session fixture)."""
    return qwen_tokenizer


@pytest.fixture(scope="module")
def vocab(tok) -> dict[str, list[int]]:
    return prefix_index(decode_vocab_texts(tok))


def test_answer_first_token_real(tok) -> None:
    prompts = translation_probes("fr", "zh", n=8) + cloze_probes("fr", n=8) + cloze_probes("zh", n=4)
    prompts += translation_probes("zh", "de", n=4)
    for p in prompts:
        tid = answer_first_token(tok, p.text, p.answer)
        piece = tok.decode([tid])
        assert piece and p.answer.startswith(piece), (p.text, p.answer, piece)
    jp = next(p for p in translation_probes("fr", "zh", n=100) if p.item == "JP")
    assert tok.decode([answer_first_token(tok, jp.text, jp.answer)]) == "日本"
    # a space-led answer after a comma gets the space-led token, not a bare one
    tid = answer_first_token(tok, "janvier, février, mars,", " avril")
    assert tok.decode([tid]).startswith(" ")


def test_answer_first_token_errors(tok) -> None:
    with pytest.raises(ProbeError, match="Empty answer"):
        answer_first_token(tok, "janvier, février, mars,", "")


class _ToyTokenizer:
    """Greedy longest-match tokenizer over a fixed vocabulary (unknown chars -> unk id 0)."""

    name_or_path = "toy"
    unk_token_id = 0

    def __init__(self, vocab: list[str]) -> None:
        self.vocab = vocab

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids, i = [], 0
        while i < len(text):
            match = max(
                (j for j, t in enumerate(self.vocab) if t and text.startswith(t, i)),
                key=lambda j: len(self.vocab[j]),
                default=None,
            )
            ids.append(0 if match is None else match)
            i += 1 if match is None else len(self.vocab[match])
        return ids

    def decode(self, ids: list[int]) -> str:
        return "".join("?" if i == 0 else self.vocab[i] for i in ids)

    def __len__(self) -> int:
        return len(self.vocab)


def test_answer_first_token_boundary_merge_and_unk() -> None:
    toy = _ToyTokenizer(["<unk>", "a", ":", ' "', '"', '"日', "日", "本", "日本"])
    # '"日' merges across the boundary: the prompt's tokens are not a prefix, so the
    # answer is tokenized alone.
    assert toy.encode('a: "日本')[:2] == [1, 2]
    assert toy.decode([answer_first_token(toy, 'a:"', "日本")]) == "日本"
    assert toy.decode([answer_first_token(toy, 'a: "', "日本")]) == "日本"
    with pytest.raises(ProbeError, match="unknown token"):
        answer_first_token(toy, "a:", "xyz")


def test_word_start_token_ids_real(tok, vocab) -> None:
    ids = word_start_token_ids(tok, "Allemagne", index=vocab)
    first_piece = tok.encode("Allemagne", add_special_tokens=False)[0]
    spaced_piece = tok.encode(" Allemagne", add_special_tokens=False)[0]
    assert first_piece in ids and spaced_piece in ids
    assert tok.convert_tokens_to_ids("All") in ids
    for i in ids:
        text = tok.decode([i]).lstrip(" ")
        assert text and "Allemagne".startswith(text)
    # same result from vocab texts, and a leading space in the word changes nothing
    texts = decode_vocab_texts(tok)
    assert word_start_token_ids(tok, " Allemagne", vocab_texts=texts) == ids
    assert tok.convert_tokens_to_ids("Germany") not in ids
    with pytest.raises(ProbeError):
        word_start_token_ids(tok, "  ", index=vocab)


def test_disjoint_sets_real(tok, vocab) -> None:
    fr = word_start_token_ids(tok, "Japon", index=vocab)
    en = word_start_token_ids(tok, "Japan", index=vocab)
    shared = set(fr) & set(en)
    assert tok.convert_tokens_to_ids("J") in shared and tok.convert_tokens_to_ids("Ja") in shared
    a, b = disjoint_sets(fr, en)
    assert not set(a) & set(b)
    assert set(a) == set(fr) - shared and set(b) == set(en) - shared
    assert tok.convert_tokens_to_ids("Japan") in b
    assert disjoint_sets([3, 1, 2, 1], [2, 5]) == ([3, 1], [5])


def test_decode_vocab_texts_pads(tok) -> None:
    texts = decode_vocab_texts(tok, size=len(tok) + 3)
    assert len(texts) == len(tok) + 3 and texts[-3:] == ["", "", ""]
    assert texts[tok.convert_tokens_to_ids("All")] == "All"
