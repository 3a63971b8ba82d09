"""Dataset rules: streaming JSONL validation with every problem reported, the 80:20 split, token limits."""

import json
import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuneforge.data import (
    MIN_EXAMPLES,
    Example,
    check_token_lengths,
    iter_examples,
    read_examples,
    scan_dataset,
    split_examples,
    split_indices,
    split_sizes,
)
from tuneforge.errors import DatasetError

GOOD = [json.dumps({"prompt": f"question {i}", "completion": f"answer {i}"}).encode() for i in range(40)]


def write(tmp_path, lines, name="d.jsonl"):
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def problems_of(path, **kw):
    with pytest.raises(DatasetError) as e:
        scan_dataset(path, **kw)
    return e.value


def test_good_file(tmp_path):
    path = write(tmp_path, GOOD)
    assert scan_dataset(path) == 40
    examples = read_examples(path)
    assert examples[0] == Example("question 0", "answer 0", 1)
    assert examples[-1].line == 40


def test_exactly_the_minimum_is_enough(tmp_path):
    assert scan_dataset(write(tmp_path, GOOD[:MIN_EXAMPLES])) == 32


@pytest.mark.parametrize("n", [0, 1, 31])
def test_too_few_examples(tmp_path, n):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in GOOD[:n]))
    err = problems_of(path)
    assert err.problems[0].line is None
    assert f"{n} valid example" in str(err) and "32" in str(err)


def test_blank_lines_and_crlf_and_bom_are_tolerated(tmp_path):
    lines = [b"\xef\xbb\xbf" + GOOD[0], b"", b"   \t", *[g + b"\r" for g in GOOD[1:33]], b""]
    path = write(tmp_path, lines)
    examples = read_examples(path)
    assert len(examples) == 33
    assert [e.line for e in examples[:2]] == [1, 4]  # physical line numbers survive blank lines


def test_extra_keys_are_ignored(tmp_path):
    lines = [json.dumps({"prompt": "p", "completion": "c", "id": i, "meta": {}}).encode() for i in range(32)]
    assert scan_dataset(write(tmp_path, lines)) == 32


BAD_LINES = {
    b"\xff\xfe not utf8": "not valid UTF-8",
    b'{"prompt": "a" "completion": "b"}': "not valid JSON (Expecting ',' delimiter at column 16)",
    b'{"prompt": "a", "completion": ': "not valid JSON",
    b"[1, 2]": "not a JSON object (got array)",
    b'"just a string"': "not a JSON object (got string)",
    b"42": "not a JSON object (got number)",
    b"null": "not a JSON object (got null)",
    b'{"prompt": "a", "completion": 3}': '"completion" must be a string, got number',
    b'{"prompt": null, "completion": "b"}': '"prompt" must be a string, got null',
    b'{"prompt": ["a"], "completion": "b"}': '"prompt" must be a string, got array',
    b'{"completion": "b"}': 'missing "prompt"',
    b'{"prompt": "a"}': 'missing "completion"',
    b'{"prompt": "a", "completion": ""}': '"completion" is empty',
    b'{"prompt": "a", "completion": "  \\n "}': '"completion" is empty (only whitespace)',
    b'{"prompt": "", "completion": "b"}': '"prompt" is empty',
    b'{"prompt": "\\ud800", "completion": "b"}': "unpaired surrogate",
    b"[" * 100_000: "nested too deeply",
    b"1" * 5000: "a number with too many digits",  # int() refuses > 4300 digits: still a clean problem
}


@pytest.mark.parametrize("bad, message", list(BAD_LINES.items()), ids=range(len(BAD_LINES)))
def test_each_problem_is_named_with_its_line(tmp_path, bad, message):
    err = problems_of(write(tmp_path, [*GOOD[:5], bad, *GOOD[5:]]))
    assert [p.line for p in err.problems] == [6]
    assert message in err.problems[0].message
    assert f"  line 6: {err.problems[0].message}" in str(err)


def test_all_problems_reported_together(tmp_path):
    lines = list(GOOD)
    lines[6] = b'{"prompt": "a" "completion": "b"}'
    lines[8] = b'{"prompt": "a", "completion": 7}'
    lines[11] = b'{"completion": "b"}'
    lines[20] = b'{"prompt": 1}'  # two problems on one line
    err = problems_of(write(tmp_path, lines))
    assert [p.line for p in err.problems] == [7, 9, 12, 21, 21]
    text = str(err)
    assert 'line 9: "completion" must be a string, got number' in text
    assert 'line 12: missing "prompt"' in text
    assert err.total == 5


def test_too_few_after_problems_is_reported_first(tmp_path):
    lines = [*GOOD[:31], b"not json"]
    err = problems_of(write(tmp_path, lines))
    assert err.problems[0].line is None and "31 valid" in err.problems[0].message
    assert err.problems[1].line == 32


def test_problem_cap_counts_the_rest(tmp_path):
    lines = [*GOOD, *([b"oops"] * 120)]
    err = problems_of(write(tmp_path, lines), max_problems=10)
    assert len(err.problems) == 10
    assert err.total == 120
    assert "... and 110 more" in str(err)


def test_missing_file_and_directory(tmp_path):
    assert "file not found" in str(problems_of(tmp_path / "nope.jsonl"))
    assert "directory" in str(problems_of(tmp_path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file(tmp_path):
    path = write(tmp_path, GOOD)
    path.chmod(0)
    assert "cannot be read" in str(problems_of(path))


def test_iter_examples_streams(tmp_path):
    """Examples come out before the file is finished: nothing forces the whole file into memory."""
    it = iter_examples(write(tmp_path, [*GOOD, b"bad"]))
    assert next(it).line == 1
    with pytest.raises(DatasetError):
        list(it)


# --- robustness -----------------------------------------------------------------------------------


def _scan_bytes(content: bytes):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "d.jsonl")
        with open(path, "wb") as f:
            f.write(content)
        try:
            return scan_dataset(path)
        except DatasetError as e:
            assert e.total >= 1 and e.problems
            return e


VALID = b"\n".join(GOOD[:32]) + b"\n"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_no_byte_line_crashes_the_reader(line):
    result = _scan_bytes(VALID + line + b"\n")
    if isinstance(result, int):
        assert result in (32, 33)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(prompt=_json, completion=_json, drop=st.sampled_from([None, "prompt", "completion"]))
def test_no_json_value_crashes_the_reader(prompt, completion, drop):
    obj = {"prompt": prompt, "completion": completion}
    obj.pop(drop, None)
    _scan_bytes(VALID + json.dumps(obj).encode() + b"\n")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2000))
def test_no_whole_file_crashes_the_reader(content):
    _scan_bytes(content)


# --- split ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, n_val",
    [(32, 6), (33, 7), (34, 7), (35, 7), (36, 7), (37, 7), (38, 8), (40, 8), (100, 20), (101, 20), (103, 21), (1, 0)],
)
def test_split_sizes_round_half_up(n, n_val):
    assert split_sizes(n) == (n - n_val, n_val)


def test_split_sizes_formula():
    for n in range(0, 2000):
        assert split_sizes(n)[1] == int(n / 5 + 0.5)


@pytest.mark.parametrize("n", [32, 33, 37, 101])
def test_split_indices_partition(n):
    train, val = split_indices(n, seed=42)
    assert train == sorted(train) and val == sorted(val)
    assert sorted(train + val) == list(range(n))
    assert (len(train), len(val)) == split_sizes(n)


def test_split_is_reproducible_and_seeded():
    assert split_indices(100, 42) == split_indices(100, 42)
    assert split_indices(100, 42) != split_indices(100, 43)
    # Pinned so an accidental change of algorithm (and so of every past job's split) is noticed.
    assert split_indices(32, 42)[1] == [5, 10, 11, 15, 25, 26]


def test_split_does_not_depend_on_hash_seed():
    import subprocess
    import sys

    code = "from tuneforge.data import split_indices; print(split_indices(50, 7))"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": seed}, check=True
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1


def test_split_examples(tmp_path):
    examples = read_examples(write(tmp_path, GOOD))
    train, val = split_examples(examples, seed=3)
    assert len(train) == 32 and len(val) == 8
    assert {e.line for e in train} | {e.line for e in val} == set(range(1, 41))
    assert [e.line for e in val] == [i + 1 for i in split_indices(40, 3)[1]]


# --- token lengths --------------------------------------------------------------------------------


def _words(text):
    return len(text.split())


def test_token_lengths_within_limits_pass():
    examples = [Example("a b c", "d e", 1)]
    check_token_lengths(examples, _words, max_prompt_tokens=3, max_completion_tokens=2, context_tokens=5)
    check_token_lengths(examples, _words, max_prompt_tokens=None, max_completion_tokens=None, context_tokens=None)


def test_token_lengths_over_limits_are_listed_by_line():
    examples = [
        Example("a b c d", "x", 3),  # prompt too long
        Example("a", "x y z", 7),  # completion too long
        Example("a b c", "x y", 9),  # fits each limit but not the context
        Example("a", "x", 10),
    ]
    with pytest.raises(DatasetError) as e:
        check_token_lengths(examples, _words, max_prompt_tokens=3, max_completion_tokens=2, context_tokens=4, path="data.jsonl")
    err = e.value
    assert [p.line for p in err.problems] == [3, 3, 7, 9]
    assert "line 3: prompt is 4 tokens; this model allows at most 3" in str(err)
    assert "line 7: completion is 3 tokens" in str(err)
    assert "line 9: prompt + completion is 5 tokens; this model's context is 4" in str(err)
    assert "data.jsonl" in str(err)


def test_token_length_problems_are_capped():
    examples = [Example("a b", "c", i) for i in range(1, 101)]
    with pytest.raises(DatasetError) as e:
        check_token_lengths(
            examples, _words, max_prompt_tokens=1, max_completion_tokens=None, context_tokens=None, max_problems=5
        )
    assert len(e.value.problems) == 5 and e.value.total == 100
