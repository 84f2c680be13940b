"""Causal graphs over named nodes: ordering, cycles, ancestry.

Everything here is plain Python on node names; it runs once when a model is built (or at trace
time), never inside compiled code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class CycleError(ValueError):
    """Raised when an acyclic model's parent sets form a directed cycle."""

    def __init__(self, cycle: list[str]):
        self.cycle = cycle
        path = " -> ".join([*cycle, cycle[0]])
        super().__init__(
            f"the graph has a directed cycle: {path}. An acyclic SCM needs a DAG; remove one of "
            "these edges, or use an equilibrium SCM for models with feedback loops."
        )


def check_parents(
    parents: Mapping[str, Iterable[str]], self_loops: bool = False
) -> dict[str, tuple[str, ...]]:
    """Validate a parent map (every parent is a node, no repeats, self-loops only if allowed)."""
    out: dict[str, tuple[str, ...]] = {}
    for node, pa in parents.items():
        pa = tuple(pa)
        for p in pa:
            if p not in parents:
                raise ValueError(
                    f"node {node!r} names parent {p!r}, which is not a node of the model; "
                    f"known nodes: {sorted(parents)}"
                )
            if p == node and not self_loops:
                raise CycleError([node])
        if len(set(pa)) != len(pa):
            raise ValueError(f"node {node!r} lists a parent twice: {pa}")
        out[node] = pa
    return out


def find_cycle(parents: Mapping[str, tuple[str, ...]]) -> list[str] | None:
    """Return the nodes of one directed cycle (in edge order), or None for a DAG."""
    colour = dict.fromkeys(parents, 0)  # 0 unvisited, 1 on the stack, 2 done
    for start in parents:
        if colour[start]:
            continue
        # Iterative DFS along parent edges; the stack holds (node, iterator over parents).
        stack = [(start, iter(parents[start]))]
        path = [start]
        colour[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour[nxt] == 1:
                # We walked child -> parent, so reverse to report cause -> effect order.
                cycle = list(reversed(path[path.index(nxt) :]))
                # Start from the node declared first, so the message is stable and readable.
                rank = {n: i for i, n in enumerate(parents)}
                i = min(range(len(cycle)), key=lambda j: rank[cycle[j]])
                return cycle[i:] + cycle[:i]
            elif colour[nxt] == 0:
                colour[nxt] = 1
                stack.append((nxt, iter(parents[nxt])))
                path.append(nxt)
    return None


def topological_order(parents: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Order nodes so that parents come before children (ties keep insertion order).

    Raises:
        CycleError: naming the nodes on a directed cycle.
    """
    cycle = find_cycle(parents)
    if cycle is not None:
        raise CycleError(cycle)
    done: set[str] = set()
    order: list[str] = []
    remaining = list(parents)
    while remaining:
        nxt = []
        for node in remaining:
            if all(p in done for p in parents[node]):
                order.append(node)
                done.add(node)
            else:
                nxt.append(node)
        remaining = nxt
    return tuple(order)


def children_map(parents: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Invert a parent map."""
    ch: dict[str, list[str]] = {n: [] for n in parents}
    for node, pa in parents.items():
        for p in pa:
            ch[p].append(node)
    return {n: tuple(c) for n, c in ch.items()}


def descendants(parents: Mapping[str, tuple[str, ...]], nodes: Iterable[str]) -> set[str]:
    """The given nodes and all their descendants."""
    ch = children_map(parents)
    seen: set[str] = set()
    todo = list(nodes)
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        todo.extend(ch[n])
    return seen


def ancestors(parents: Mapping[str, tuple[str, ...]], nodes: Iterable[str]) -> set[str]:
    """The given nodes and all their ancestors."""
    seen: set[str] = set()
    todo = list(nodes)
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        todo.extend(parents[n])
    return seen
