"""Length-grouped forwards: a step's conversations split so that short ones are not padded to long ones.

A drawing conversation is ~200 positions, a step-by-step one up to ~1,100; padded together, a
batch of 8 spends most of its compute (and its attention's quadratic memory) on padding. The
step's conversations are sorted by length and cut into forwards of at most `max_tokens`
padded positions; the gradients of the forwards add up to the step's (each forward's loss
weighted by its share of the conversations), so the batch and the data order are unchanged.
"""

from __future__ import annotations


def length_groups(lengths: list[int], max_tokens: int | None) -> list[list[int]]:
    """Indices into `lengths`, grouped shortest first, each group's longest x size <= max_tokens.

    A conversation longer than `max_tokens` forms a group alone; `None` keeps one group in the
    original order (one forward, as without grouping).
    """
    if not lengths:
        return []
    if max_tokens is None:
        return [list(range(len(lengths)))]
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    groups: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda position: (lengths[position], position)):
        # Sorted ascending, so the newcomer is the group's longest.
        if groups and lengths[index] * (len(groups[-1]) + 1) <= max_tokens:
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups
