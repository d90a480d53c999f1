"""Exact and near-duplicate detection for training rows.

Exact: a blake2b digest of the normalised text (NFKC, lower case, whitespace collapsed).
Near: MinHash over character 5-gram shingles with LSH banding, every candidate pair verified by
the Jaccard similarity of the two shingle sets. Character shingles suit Korean, where one word
takes many particle and ending forms that word shingles would treat as different words.

Every hash is stable across processes and machines: shingles are hashed with a fixed polynomial
and the splitmix64 finaliser in numpy (vectorised, so 10k rows take seconds), and the MinHash
permutations are drawn from blake2b of the seed. Python's `hash()` is salted per process and
would make the kept rows differ from run to run, so it is never used.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SHINGLE = 5
_MERSENNE = np.uint64((1 << 61) - 1)
_MASK32 = np.uint64(0xFFFFFFFF)
_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def exact_key(text: str) -> bytes:
    return hashlib.blake2b(normalize_text(text).encode("utf-8"), digest_size=16).digest()


def exact_duplicates(texts: Sequence[str]) -> list[tuple[int, int]]:
    """(duplicate index, index of the first row with the same normalised text)."""
    first: dict[bytes, int] = {}
    out = []
    for i, text in enumerate(texts):
        key = exact_key(text)
        if key in first:
            out.append((i, first[key]))
        else:
            first[key] = i
    return out


# ---------------------------------------------------------------- MinHash


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def shingle_hashes(text: str, k: int = SHINGLE) -> np.ndarray:
    """Sorted unique 32-bit hashes of the character k-grams of the normalised text."""
    codes = np.frombuffer(normalize_text(text).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if codes.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if codes.size < k:
        codes = np.concatenate([codes, np.zeros(k - codes.size, dtype=np.uint64)])
    n = codes.size - k + 1
    h = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):  # wrap-around is the point of the polynomial hash
        for j in range(k):
            h = h * np.uint64(1_000_003) + codes[j : j + n]
        h = _splitmix64(h) & _MASK32
    return np.unique(h)


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    digest = hashlib.blake2b(f"kofin-minhash-{seed}".encode(), digest_size=64).digest()
    rng = np.random.Generator(np.random.PCG64(int.from_bytes(digest, "big")))
    a = rng.integers(1, 1 << 32, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, 1 << 32, size=num_perm, dtype=np.uint64)
    return a, b


def minhash_signatures(shingles: Sequence[np.ndarray], num_perm: int = 128, seed: int = 0) -> np.ndarray:
    """(rows, num_perm) uint64 MinHash signatures; (a*x + b) mod 2^61-1 never overflows for
    32-bit x and a, b below 2^32."""
    a, b = _permutations(num_perm, seed)
    out = np.full((len(shingles), num_perm), np.uint64(_MASK32), dtype=np.uint64)
    # Rows are processed in blocks of about 32k shingles: one (num_perm, block) matrix each.
    start = 0
    while start < len(shingles):
        stop, total = start, 0
        while stop < len(shingles) and (total == 0 or total + shingles[stop].size <= 32768):
            total += shingles[stop].size
            stop += 1
        sizes = np.array([s.size for s in shingles[start:stop]])
        nonempty = np.flatnonzero(sizes)
        if nonempty.size:
            values = np.concatenate([shingles[start + i] for i in nonempty])
            hashed = ((a[:, None] * values[None, :] + b[:, None]) % _MERSENNE) & _MASK32
            offsets = np.concatenate([[0], np.cumsum(sizes[nonempty])[:-1]])
            out[start + nonempty] = np.minimum.reduceat(hashed, offsets, axis=1).T
        start = stop
    return out


def lsh_bands(num_perm: int, threshold: float) -> tuple[int, int]:
    """(bands, rows per band) whose S-curve rises well below `threshold`, so true near
    duplicates almost always collide; Jaccard verification removes the extra candidates."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        if num_perm % rows:
            continue
        bands = num_perm // rows
        if (1 / bands) ** (1 / rows) <= 0.9 * threshold:
            best = (bands, rows)
    return best


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    if a.size == 0 and b.size == 0:
        return 1.0
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


@dataclass
class NearDuplicateIndex:
    """Rows added so far, bucketed by LSH band; `query` returns the first verified match."""

    threshold: float
    num_perm: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        self.bands, self.rows = lsh_bands(self.num_perm, self.threshold)
        self.buckets: list[dict[bytes, list[int]]] = [{} for _ in range(self.bands)]
        self.shingles: dict[int, np.ndarray] = {}

    def band_keys(self, signature: np.ndarray) -> list[bytes]:
        return [signature[i * self.rows : (i + 1) * self.rows].tobytes() for i in range(self.bands)]

    def query(self, shingles: np.ndarray, keys: list[bytes]) -> int | None:
        candidates: set[int] = set()
        for band, key in enumerate(keys):
            candidates.update(self.buckets[band].get(key, ()))
        for j in sorted(candidates):  # lowest id first, so the reported match is stable
            if jaccard(shingles, self.shingles[j]) >= self.threshold:
                return j
        return None

    def add(self, row_id: int, shingles: np.ndarray, keys: list[bytes]) -> None:
        self.shingles[row_id] = shingles
        for band, key in enumerate(keys):
            self.buckets[band].setdefault(key, []).append(row_id)


def near_duplicates(
    texts: Sequence[str], threshold: float, num_perm: int = 128, seed: int = 0
) -> list[tuple[int, int]]:
    """(duplicate index, index of the earlier kept row it matches) for rows whose shingle
    Jaccard with a kept earlier row is >= threshold. Exact duplicates are near duplicates too."""
    shingles = [shingle_hashes(t) for t in texts]
    signatures = minhash_signatures(shingles, num_perm, seed)
    index = NearDuplicateIndex(threshold, num_perm, seed)
    out = []
    for i in range(len(texts)):
        keys = index.band_keys(signatures[i])
        match = index.query(shingles[i], keys)
        if match is None:
            index.add(i, shingles[i], keys)
        else:
            out.append((i, match))
    return out


def cross_duplicates(
    queries: Sequence[str], corpus: Sequence[str], threshold: float, num_perm: int = 128, seed: int = 0
) -> list[tuple[int, int]]:
    """(query index, corpus index) for queries that near-duplicate some corpus row (leakage)."""
    index = NearDuplicateIndex(threshold, num_perm, seed)
    corpus_shingles = [shingle_hashes(t) for t in corpus]
    for j, (sh, sig) in enumerate(
        zip(corpus_shingles, minhash_signatures(corpus_shingles, num_perm, seed), strict=True)
    ):
        index.add(j, sh, index.band_keys(sig))
    query_shingles = [shingle_hashes(t) for t in queries]
    out = []
    for i, (sh, sig) in enumerate(zip(query_shingles, minhash_signatures(query_shingles, num_perm, seed), strict=True)):
        match = index.query(sh, index.band_keys(sig))
        if match is not None:
            out.append((i, match))
    return out
