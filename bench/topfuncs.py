"""Summarise a py-spy raw (collapsed stacks) file: self and total time per function."""

from __future__ import annotations

import collections
import sys


def main(path: str) -> None:
    self_t: collections.Counter[str] = collections.Counter()
    total_t: collections.Counter[str] = collections.Counter()
    n = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            c = int(count)
            frames = stack.split(";")
            n += c
            self_t[frames[-1]] += c
            for fr in set(frames):
                total_t[fr] += c
    print(f"{n} samples; total (inclusive) top 40:")
    for fr, c in total_t.most_common(40):
        print(f"{100 * c / n:5.1f}%  {fr[:150]}")
    print("self top 25:")
    for fr, c in self_t.most_common(25):
        print(f"{100 * c / n:5.1f}%  {fr[:150]}")


if __name__ == "__main__":
    main(sys.argv[1])
