"""Package versions as pacman orders them: ``[epoch:]pkgver[-pkgrel]``.

A worker's version decides whether it is "already installed", whether the
catalog has a newer one, and the order ``keeper workers`` lists versions in;
comparing them as strings gets ``1.10`` < ``1.9`` and ``1:1.0`` < ``2.0`` wrong.
This is libalpm's ``alpm_pkg_vercmp`` restated: the epoch first (a missing one is
0), then ``rpmvercmp`` on pkgver, then on pkgrel when both have one.

``rpmvercmp`` splits a version into runs of digits and runs of letters (other
characters only separate them): numbers compare as numbers, letters as strings,
a number beats letters, a longer separator wins, and of two versions that agree
up to where one ends, the longer one is newer unless what follows is letters
(``1.0a`` is a pre-release of ``1.0``). Pure; the tests compare it with pacman's
own ``vercmp``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


def _isdigit(char: str) -> bool:
    return "0" <= char <= "9"


def _isalpha(char: str) -> bool:
    return "a" <= char <= "z" or "A" <= char <= "Z"


def _isalnum(char: str) -> bool:
    return _isdigit(char) or _isalpha(char)


def rpmvercmp(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is older than, the same as or newer than ``b``."""
    if a == b:
        return 0
    one = two = 0  # positions in a and b
    while one < len(a) and two < len(b):
        start1, start2 = one, two
        while one < len(a) and not _isalnum(a[one]):
            one += 1
        while two < len(b) and not _isalnum(b[two]):
            two += 1
        if one >= len(a) or two >= len(b):
            break
        if one - start1 != two - start2:
            return -1 if one - start1 < two - start2 else 1
        end1, end2 = one, two
        if _isdigit(a[one]):
            is_number = True
            while end1 < len(a) and _isdigit(a[end1]):
                end1 += 1
            while end2 < len(b) and _isdigit(b[end2]):
                end2 += 1
        else:
            is_number = False
            while end1 < len(a) and _isalpha(a[end1]):
                end1 += 1
            while end2 < len(b) and _isalpha(b[end2]):
                end2 += 1
        segment1, segment2 = a[one:end1], b[two:end2]
        if not segment2:  # different kinds of segment: a number is newer
            return 1 if is_number else -1
        if is_number:
            segment1 = segment1.lstrip("0")
            segment2 = segment2.lstrip("0")
            if len(segment1) != len(segment2):
                return 1 if len(segment1) > len(segment2) else -1
        if segment1 != segment2:
            return -1 if segment1 < segment2 else 1
        one, two = end1, end2
    rest1, rest2 = a[one:], b[two:]
    if not rest1 and not rest2:
        return 0
    if (not rest1 and not _isalpha(rest2[0])) or (rest1 and _isalpha(rest1[0])):
        return -1
    return 1


@dataclass(frozen=True)
class Version:
    """``[epoch:]pkgver[-pkgrel]``, split as libalpm splits it."""

    epoch: str
    pkgver: str
    pkgrel: str | None

    @classmethod
    def parse(cls, text: str) -> Version:
        digits = 0
        while digits < len(text) and _isdigit(text[digits]):
            digits += 1
        rest = text[digits:]
        dash = rest.rfind("-")
        release: str | None = None
        if dash >= 0:
            release = rest[dash + 1 :]
            text = text[: digits + dash]
            rest = rest[:dash]
        if rest.startswith(":"):
            return cls(text[:digits] or "0", rest[1:], release)
        return cls("0", text, release)


def vercmp(a: str, b: str) -> int:
    """pacman's ``vercmp``: -1, 0 or 1 comparing two full versions."""
    if a == b:
        return 0
    left, right = Version.parse(a), Version.parse(b)
    result = rpmvercmp(left.epoch, right.epoch)
    if result == 0:
        result = rpmvercmp(left.pkgver, right.pkgver)
        if result == 0 and left.pkgrel is not None and right.pkgrel is not None:
            result = rpmvercmp(left.pkgrel, right.pkgrel)
    return result


def full_version(pkgver: str, pkgrel: str, epoch: str = "") -> str:
    """What makepkg calls the full version: the epoch only when it is above 0."""
    if epoch and epoch.strip("0"):
        return f"{epoch}:{pkgver}-{pkgrel}"
    return f"{pkgver}-{pkgrel}"


#: A sort key: ``sorted(versions, key=sort_key)`` orders oldest first.
sort_key = functools.cmp_to_key(vercmp)


def newest(versions: list[str]) -> str | None:
    """The newest of ``versions``, or None for none."""
    return max(versions, key=sort_key) if versions else None
