"""Generate a site's media tree, or change part of one; runs ON the test host as the app's user (stdlib only).

    python3 - ROOT make MB SEED      # MB (10^6 bytes) of new media under ROOT
    python3 - ROOT change PCT SEED   # rewrite and add files totalling PCT % of ROOT's bytes

The mix, by bytes: 50% photo originals (JPEG-like: a JPEG header and random bytes, 30 KB-1 MB, incompressible),
10% renditions (the same, 5-40 KB: many small files), 25% large files (video/PDF-like, random, 4-16 MB) and 15%
compressible text (SVG paths, JSON, plain text from a word list, 5-200 KB; zstd packs it about 3x). Files are
made with umask 027 (0640 files, 0750 directories that inherit media/'s setgid, so group caddy), as the app would.
Prints one line: ``MEDIA files=N bytes=B``.
"""

import math
import os
import random
import sys

KINDS = (  # name, share of bytes, smallest, largest, suffix, incompressible
    ("original_images", 0.50, 30_000, 1_000_000, ".jpg", True),
    ("images", 0.10, 5_000, 40_000, ".jpg", True),
    ("documents", 0.25, 4_000_000, 16_000_000, ".mp4", True),
    ("text", 0.15, 5_000, 200_000, ".svg", False),
)
JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"


def log_uniform(rng: random.Random, low: int, high: int) -> int:
    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


def words(rng: random.Random) -> list[str]:
    letters = "etaoinshrdlucmfwypvbgkqjxz"
    return ["".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(3000)]


def compressible(rng: random.Random, size: int, vocab: list[str]) -> bytes:
    """About `size` bytes of SVG-like markup: random paths and words, compressible but not repetitive."""
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1000 1000">\n']
    length = len(parts[0])
    while length < size:
        xs = [rng.randint(0, 999) for _ in range(8)]
        line = (f'<path d="M{xs[0]} {xs[1]} L{xs[2]} {xs[3]} Q{xs[4]} {xs[5]} {xs[6]} {xs[7]}" fill="#{rng.getrandbits(24):06x}"/>'
                f'<text>{" ".join(rng.choices(vocab, k=12))}</text>\n')
        parts.append(line)
        length += len(line)
    return "".join(parts).encode()[:size]


def content(rng: random.Random, kind: tuple, size: int, vocab: list[str]) -> bytes:
    if kind[5]:
        return (JPEG_HEAD + os.urandom(max(0, size - len(JPEG_HEAD) - 2)) + b"\xff\xd9")[:size]
    return compressible(rng, size, vocab)


def write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def make(root: str, budget: int, rng: random.Random, tag: str) -> tuple[int, int]:
    vocab, files, written = words(rng), 0, 0
    for kind in KINDS:
        share, n = int(budget * kind[1]), 0
        while share > 0:
            size = min(share, log_uniform(rng, kind[2], kind[3]))
            month = f"{2020 + n % 6}/{1 + n % 12:02d}"
            write(os.path.join(root, kind[0], month, f"{tag}{n:05d}_{rng.getrandbits(32):08x}{kind[4]}"), content(rng, kind, size, vocab))
            share, n, files, written = share - size, n + 1, files + 1, written + size
    return files, written


def change(root: str, percent: float, rng: random.Random) -> tuple[int, int]:
    """Half the bytes rewrite existing photos and texts (same size, new content), half are new files."""
    existing = sorted(os.path.join(d, f) for d, _, names in os.walk(root) for f in names)
    total = sum(os.path.getsize(p) for p in existing)
    budget = int(total * percent / 100)
    vocab, files, written = words(rng), 0, 0
    candidates = [p for p in existing if p.endswith((".jpg", ".svg")) and "/documents/" not in p]
    rng.shuffle(candidates)
    for path in candidates:
        if written >= budget // 2:
            break
        size = os.path.getsize(path)
        kind = KINDS[0] if path.endswith(".jpg") else KINDS[3]
        write(path, content(rng, kind, size, vocab))
        files, written = files + 1, written + size
    made, added = make(root, budget - written, rng, f"c{rng.getrandbits(16):04x}_")
    return files + made, written + added


def main() -> None:
    root, mode, amount, seed = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    os.umask(0o027)
    rng = random.Random(seed)
    files, written = make(root, int(amount * 1e6), rng, "") if mode == "make" else change(root, amount, rng)
    print(f"MEDIA files={files} bytes={written}")


main()
