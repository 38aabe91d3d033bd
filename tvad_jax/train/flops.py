"""FLOPs of one compiled step, counting loop bodies once per iteration.

XLA's `cost_analysis()` counts the body of a `while` loop once: for a decoder whose layers
are an `nn.scan` of depth L it reports about 1/L of the real matmul FLOPs. `step_flops` reads
the dot and convolution FLOPs from the compiled HLO text, weights every computation by how
often it runs (while bodies by their known trip count), and adds the difference to XLA's
figure.
"""
from __future__ import annotations

import math
import re


def xla_flops(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops is not None and flops >= 0 else None


# ---------------------------------------------------------------------------------------------
# Loop-aware matmul FLOPs from the compiled HLO text

_COMP_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s+\((.*)\)\s+->\s+.*\{\s*$")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s+=\s+(.*)$")
_SHAPE = re.compile(r"^([a-z]\w*)\[([\d,]*)\]")
_CALLED = re.compile(r"\b(calls|to_apply|body|condition|true_computation|false_computation)"
                     r"=%([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')


def _split_type(rest: str) -> tuple[str, str]:
    """'TYPE opcode(...), attrs' -> (TYPE, 'opcode(...), attrs'); TYPE may be a tuple."""
    if rest.startswith("("):
        depth = 0
        for i, ch in enumerate(rest):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                return rest[:i + 1], rest[i + 1:].lstrip()
    head, _, tail = rest.partition(" ")
    return head, tail


def _dims(type_str: str) -> tuple[int, ...] | None:
    m = _SHAPE.match(type_str)
    if not m:
        return None
    return tuple(int(d) for d in m.group(2).split(",") if d)


def _operands(call: str) -> list[str]:
    """Operand names of 'opcode(%a, %b), attrs'."""
    start = call.index("(")
    depth, end = 0, len(call)
    for i in range(start, len(call)):
        depth += call[i] == "("
        depth -= call[i] == ")"
        if depth == 0:
            end = i
            break
    return re.findall(r"%([\w.\-]+)", call[start:end])


def _instr_flops(opcode: str, call: str, out_dims, shapes: dict) -> float:
    if opcode == "dot":
        ops = _operands(call)
        lhs = shapes.get(ops[0]) if ops else None
        m = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", call)
        if lhs is None or out_dims is None:
            return 0.0
        k = math.prod(lhs[int(d)] for d in m.group(1).split(",") if d) if m else 1
        return 2.0 * math.prod(out_dims) * k
    if opcode == "convolution":
        ops = _operands(call)
        kernel = shapes.get(ops[1]) if len(ops) > 1 else None
        m = re.search(r"dim_labels=\w+_(\w+)->", call)
        if kernel is None or out_dims is None or not m:
            return 0.0
        labels = m.group(1)
        out_features = kernel[labels.index("o")] if "o" in labels else 1
        return 2.0 * math.prod(out_dims) * math.prod(kernel) / max(out_features, 1)
    return 0.0


def hlo_matmul_flops(text: str) -> dict:
    """Dot and convolution FLOPs of an HLO module's text, each computation weighted by how
    often it runs: `while` bodies by their known trip count (1 where unknown), fusions and
    calls by their caller's weight, a conditional by its costliest branch. Returns
    {"matmul_flops": loop-aware total, "matmul_flops_once": the total with every loop body
    counted once (as XLA's cost analysis counts), "loops": [{"trip_count",
    "matmul_flops_per_iteration"}] of the outermost loops, "unknown_trip_counts": loops
    without a known trip count}."""
    comps: dict[str, dict] = {}
    entry = None
    current = None
    for line in text.splitlines():
        if current is None:
            m = _COMP_HEADER.match(line)
            if m:
                current = {"flops": 0.0, "calls": [], "branches": [], "shapes": {}}
                comps[m.group(2)] = current
                if m.group(1):
                    entry = m.group(2)
                # parameter shapes also appear as `parameter(i)` instructions below
            continue
        if line.strip() == "}":
            current = None
            continue
        m = _INSTR.match(line)
        if not m:
            continue
        name, rest = m.groups()
        type_str, call = _split_type(rest)
        out_dims = _dims(type_str)
        if out_dims is not None:
            current["shapes"][name] = out_dims
        opcode = call.split("(", 1)[0].strip()
        current["flops"] += _instr_flops(opcode, call, out_dims, current["shapes"])
        trip = None
        if opcode == "while":
            t = _TRIP.search(call)
            trip = int(t.group(1)) if t else None
        called = _CALLED.findall(call)
        for kind, callee in called:
            if kind in ("condition", "true_computation", "false_computation"):
                continue
            factor = (trip or 1) if kind == "body" else 1
            current["calls"].append((callee, factor, kind == "body", trip))
        b = _BRANCHES.search(call)
        if b:
            current["branches"].append(re.findall(r"%([\w.\-]+)", b.group(1)))
        elif opcode == "conditional":
            current["branches"].append([callee for kind, callee in called
                                        if kind in ("true_computation", "false_computation")])
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")

    memo: dict[tuple[str, bool], float] = {}

    def total(comp: str, with_trips: bool, stack=()) -> float:
        key = (comp, with_trips)
        if key in memo:
            return memo[key]
        if comp not in comps or comp in stack:
            return 0.0
        c = comps[comp]
        value = c["flops"]
        for callee, factor, _, _ in c["calls"]:
            value += (factor if with_trips else 1) * total(callee, with_trips, stack + (comp,))
        for branches in c["branches"]:  # a conditional runs one branch: count the costliest
            value += max(total(b, with_trips, stack + (comp,)) for b in branches)
        memo[key] = value
        return value

    loops, unknown = [], 0

    def find_loops(comp: str, stack=()):
        nonlocal unknown
        if comp not in comps or comp in stack:
            return
        for callee, _, is_body, trip in comps[comp]["calls"]:
            if is_body:
                unknown += trip is None
                loops.append({"trip_count": trip,
                              "matmul_flops_per_iteration": total(callee, True)})
            else:
                find_loops(callee, stack + (comp,))
        for branches in comps[comp]["branches"]:
            for callee in branches:
                find_loops(callee, stack + (comp,))

    find_loops(entry)
    return {"matmul_flops": total(entry, True), "matmul_flops_once": total(entry, False),
            "loops": loops, "unknown_trip_counts": unknown}


def step_flops(compiled) -> tuple[float | None, float | None, dict | None]:
    """(loop-corrected FLOPs, XLA's own figure, the HLO count or None) of a compiled
    executable; None where the backend gives no cost analysis."""
    xla = xla_flops(compiled)
    try:
        hlo = hlo_matmul_flops(compiled.as_text())
    except Exception:  # noqa: BLE001 - no HLO text on this backend
        hlo = None
    flops = xla
    if xla is not None and hlo is not None:
        flops = xla + hlo["matmul_flops"] - hlo["matmul_flops_once"]
    return flops, xla, hlo
