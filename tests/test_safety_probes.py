"""Issue 18, prompts: unencodable text and malformed CSV are clear errors; a probe says when it has fewer items than n."""

from __future__ import annotations

import warnings

import pytest

from lensmap.data.probes import cloze_probes, load_prompts_file, translation_probes
from lensmap.errors import LensmapWarning, ProbeError


def test_a_lone_surrogate_in_a_jsonl_prompt_names_the_file_and_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "fine"}\n{"prompt": "bad \\ud800 text"}\n', encoding="utf-8")
    with pytest.raises(ProbeError, match=r"p.jsonl.*'prompt' on line 2 is not valid Unicode.*character 5 is a lone surrogate"):
        load_prompts_file(path)
    path.write_text('{"prompt": "ok", "answer": "\\udfff"}\n', encoding="utf-8")
    with pytest.raises(ProbeError, match="'answer' on line 1 .*lone surrogate"):
        load_prompts_file(path)
    array = tmp_path / "p.json"
    array.write_text('[{"prompt": "a"}, {"prompt": "\\ud83d"}]', encoding="utf-8")
    with pytest.raises(ProbeError, match="record 2"):
        load_prompts_file(array)
    # a proper surrogate pair is one character, and fine
    path.write_text('{"prompt": "smile \\ud83d\\ude00"}\n', encoding="utf-8")
    assert load_prompts_file(path)[0].text == "smile \U0001F600"


def test_an_unterminated_csv_quote_is_an_error_not_one_giant_prompt(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('prompt,answer\n"hello, world", x\n"unterminated,y\nnext,z\nlast,w\n', encoding="utf-8")
    with pytest.raises(ProbeError, match=r"p.csv.*quote opened on line 3 is never closed"):
        load_prompts_file(path)
    tsv = tmp_path / "p.tsv"
    tsv.write_text('prompt\tanswer\n"never closed\tx\nmore\ty\n', encoding="utf-8")
    with pytest.raises(ProbeError, match="line 2 is never closed"):
        load_prompts_file(tsv)
    # a quoted field may span lines (few-shot prompts do): still one prompt, no error
    path.write_text('prompt,answer\n"line one\nline two",x\nplain,y\n', encoding="utf-8")
    prompts = load_prompts_file(path)
    assert [p.text for p in prompts] == ["line one\nline two", "plain"]
    path.write_text('prompt,answer\n"closed"junk,x\n', encoding="utf-8")
    with pytest.raises(ProbeError, match="malformed row on line 2"):
        load_prompts_file(path)


def test_asking_for_more_items_than_a_probe_has_warns_with_the_real_n():
    with pytest.warns(LensmapWarning, match=r"probe 'cloze fr months': n=100000 .* it has 48 usable item\(s\), so it uses n=48"):
        prompts = cloze_probes("fr", n=100000)
    assert len(prompts) == 48
    with pytest.warns(LensmapWarning, match=r"translation fr->zh months.* uses n=12"):
        assert len(translation_probes("fr", "zh", n=50, domain="months")) == 12
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when n fits, or when n is left to its default
        assert len(cloze_probes("fr", n=48)) == 48
        assert len(cloze_probes("de", domain="weekdays")) == 24
        assert len(translation_probes("fr", "ja", domain="weekdays")) == 7
        assert len(translation_probes("fr", "zh")) == 40
    with pytest.raises(ProbeError, match="n must be an integer"):
        cloze_probes("fr", n=0)
