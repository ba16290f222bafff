"""Versions in pacman's order (hive.version), checked against pacman's own vercmp."""

from __future__ import annotations

import itertools
import random
import shutil
import subprocess

import pytest

from hive.version import Version, full_version, newest, rpmvercmp, sort_key, vercmp

#: Pairs that exercise every rule: numbers vs letters, leading zeros, separators
#: of different lengths, a trailing letter segment (pre-release), epochs, pkgrels.
CASES = [
    ("1.0", "1.0", 0),
    ("1.0", "1.1", -1),
    ("1.10", "1.9", 1),
    ("1.0a", "1.0", -1),
    ("1.0", "1.0.1", -1),
    ("1.0.a", "1.0", 1),  # a separator before the letters: newer (pacman agrees)
    ("1.0alpha", "1.0beta", -1),
    ("1.0rc1", "1.0", -1),
    ("001", "1", 0),
    ("1.01", "1.1", 0),
    ("1..0", "1.0", 1),
    ("1_0", "1.0", 0),
    ("a", "1", -1),
    ("1:1.0", "2.0", 1),
    ("0:1.0", "1.0", 0),
    ("1.0-1", "1.0-2", -1),
    ("1.0-1", "1.0", 0),
    ("1.0-2.1", "1.0-2", 1),
    ("2:1-1", "1:9-9", 1),
    ("1.0+git5", "1.0", 1),
    ("r123.abc", "r99.def", 1),
    ("", "1", -1),
]


@pytest.mark.parametrize(("a", "b", "expected"), CASES)
def test_vercmp_cases(a: str, b: str, expected: int) -> None:
    assert vercmp(a, b) == expected
    assert vercmp(b, a) == -expected


def test_parse() -> None:
    assert Version.parse("2:1.0-3") == Version("2", "1.0", "3")
    assert Version.parse("1.0") == Version("0", "1.0", None)
    assert Version.parse(":1-1") == Version("0", "1", "1")
    assert Version.parse("a:1") == Version("0", "a:1", None)


def test_full_version_writes_the_epoch_only_above_zero() -> None:
    assert full_version("1.0", "1") == "1.0-1"
    assert full_version("1.0", "1", "0") == "1.0-1"
    assert full_version("1.0", "1", "00") == "1.0-1"
    assert full_version("1.0", "1", "2") == "2:1.0-1"


def test_sorting_and_newest() -> None:
    versions = ["1.10-1", "1.9-1", "1:0.1-1", "1.9-2", "1.9a-1"]
    assert sorted(versions, key=sort_key) == ["1.9a-1", "1.9-1", "1.9-2", "1.10-1", "1:0.1-1"]
    assert newest(versions) == "1:0.1-1"
    assert newest([]) is None


def test_rpmvercmp_is_antisymmetric() -> None:
    parts = ["1", "01", "a", "b", ".", "_", "10", "1a", "+", "~"]
    for a, b in itertools.product(
        ["".join(p) for p in itertools.product(parts, repeat=2)], repeat=2
    ):
        assert rpmvercmp(a, b) == -rpmvercmp(b, a)


@pytest.mark.skipif(shutil.which("vercmp") is None, reason="pacman's vercmp is not installed")
def test_agrees_with_pacmans_vercmp() -> None:
    """Random versions built from the characters that matter, plus the cases above."""
    rng = random.Random(14)
    alphabet = ["0", "1", "2", "9", "10", "a", "b", "rc", ".", "_", "+", "-", ":", "00"]
    pairs = [(a, b) for a, b, _ in CASES]
    for _ in range(300):
        pairs.append(
            tuple(  # type: ignore[arg-type]
                "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(2)
            )
        )
    script = "\n".join(f"vercmp {shlex_quote(a)} {shlex_quote(b)}" for a, b in pairs)
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    expected = [int(line) for line in done.stdout.split()]
    assert len(expected) == len(pairs)
    got = [vercmp(a, b) for a, b in pairs]
    mismatches = [(a, b, e, g) for (a, b), e, g in zip(pairs, expected, got, strict=True) if e != g]
    assert mismatches == []


def shlex_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"
