"""The NAT matrix: which path every pair of NAT kinds settles on, and how fast.

Run as ``.venv/bin/python -m benchmarks.nat_matrix`` (needs the Docker engine
and images of ``.ci/docker-setup``, and the ``bench`` extra for the picture).
It builds the matrix world of ``tests/e2e/matrix.py`` (one node of every NAT
kind, docs/e2e.md "The NAT matrix") with ``natroute-probe`` beside every
sidecar instead of the demo, and measures for each ordered pair (sender,
receiver):

- the path the sender's sidecar settled on (``/v1/peers``);
- the time from both sidecars being ready (their ``sidecar_ready`` log line)
  to the receiver's probe getting the sender's first datagram
  (``probe_first_delivery``; the probes send to a new peer every 0.1 s);
- the time from both being ready to the sender's path turning ``direct``
  (its path events), where it does.

All clocks are the host's: containers share ``CLOCK_MONOTONIC`` and the wall
clock, so times from different containers compare. It prints the matrix
(rows senders, columns receivers), a summary line ``direct achieved/possible
= X/Y; delivered pairs = A/B`` over ordered pairs, and writes the matrix as a
PNG heat-map. With ``--predict`` every sidecar runs port prediction
(``NATROUTE_SIDECAR_PREDICT=true``, docs/protocol.md "Port prediction") and a
second summary line counts the pairs the NATs alone keep on the relay
(endpoint-dependent mapping against a port-dependent filter) that went direct
by a spray (``predicted``). ``--logs DIR`` keeps, for every node, its
sidecar's log and its ``/v1/status`` and ``/v1/peers`` at the end of the run
(what to read when a pair misses). Not a test: nothing is asserted. Every
wait is bounded and everything is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.engine import build_images, engine_client
from tests.e2e.lab import Lab
from tests.e2e.matrix import MATRIX, MATRIX_PLAN, PREDICTABLE, expected_path, ordered_pairs
from tests.e2e.matrix import Path as PathKind
from tests.e2e.world import FAST_SIDECAR_ENV, World, build_world

__all__ = ["Cell", "main", "measure"]

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PNG = REPO / "docs" / "img" / "nat-matrix.png"


@dataclass(frozen=True)
class Cell:
    """One ordered pair: sender ``src`` to receiver ``dst``."""

    src: str
    dst: str
    expected: str  # direct | relay | stream-relay
    direct_possible: bool
    path: str | None  # what src's sidecar settled on
    first_delivery: float | None  # seconds after both sidecars were ready
    direct_after: float | None  # seconds after both were ready, when it went direct
    reason: str | None = None  # src's reason code for its path
    why: str = ""  # why the NATs allow (or not) a direct path
    #: seconds from the sender's probe first sending to this receiver to the
    #: first delivery: the routing's share, without the probe learning the peer
    first_send_to_delivery: float | None = None


def _json_lines(container: Any) -> list[dict[str, Any]]:
    out = []
    for line in container.logs().decode("utf-8", "replace").splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def _wall_to_monotonic(ts: str, offset: float) -> float:
    return datetime.fromisoformat(ts).timestamp() - offset


def _ready_times(world: World, offset: float) -> dict[str, float]:
    ready = {}
    for name, node in world.nodes.items():
        for line in _json_lines(node.sidecar):
            if line.get("event") == "sidecar_ready":
                ready[name] = _wall_to_monotonic(line["ts"], offset)
                break
    return ready


def _probe_firsts(
    world: World,
) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], float]]:
    """From one read of every probe's log: (src, dst) -> monotonic time dst's probe got
    src's first datagram, and (src, dst) -> monotonic time src's probe first sent to dst."""
    names = world.by_id()
    delivered, sent = {}, {}
    for name, node in world.nodes.items():
        for line in _json_lines(node.demo):
            event = line.get("event")
            if event == "probe_first_delivery" and line.get("src") in names:
                delivered[(names[line["src"]], name)] = float(line["recv_at"])
            elif event == "probe_first_send" and line.get("dst") in names:
                sent[(name, names[line["dst"]])] = float(line["at"])
    return delivered, sent


def _paths(world: World) -> dict[tuple[str, str], tuple[str, float | None, str]]:
    """(a, b) -> (a's path for b, monotonic time of its first ``direct`` event, reason)."""
    names = world.by_id()
    paths = {}
    for a in world.nodes:
        for peer in world.status(a)["peers"]:
            b = names.get(peer["node_id"])
            if b is None:
                continue
            direct = [e["at"] for e in peer.get("events", []) if e.get("path") == "direct"]
            paths[(a, b)] = (peer["path"], min(direct) if direct else None, peer["reason"])
    return paths


def measure(world: World, deliver_timeout: float, settle: float) -> list[Cell]:
    """Wait for first deliveries and paths to settle (bounded); one cell per ordered pair."""
    offset = time.time() - time.monotonic()
    pairs = ordered_pairs(MATRIX_PLAN)
    deliverable = [
        p for p in pairs if expected_path(MATRIX_PLAN, *p).path is not PathKind.STREAM_RELAY
    ]
    deadline = time.monotonic() + deliver_timeout
    while time.monotonic() < deadline:
        if set(deliverable) <= set(_probe_firsts(world)[0]):
            break
        time.sleep(1.0)
    time.sleep(settle)
    ready, (first, sends), paths = _ready_times(world, offset), _probe_firsts(world), _paths(world)
    cells = []
    for src, dst in pairs:
        expected = expected_path(MATRIX_PLAN, src, dst)
        start = max(ready.get(src, float("nan")), ready.get(dst, float("nan")))
        path, direct_at, reason = paths.get((src, dst), (None, None, None))
        delivered = first.get((src, dst))
        sent = sends.get((src, dst))
        cells.append(
            Cell(
                src,
                dst,
                expected.path.value,
                expected.direct_possible,
                path,
                None if delivered is None else max(0.0, delivered - start),
                None if direct_at is None or path != "direct" else max(0.0, direct_at - start),
                reason,
                expected.reason,
                None if delivered is None or sent is None else max(0.0, delivered - sent),
            )
        )
    return cells


def _cell_text(cell: Cell) -> str:
    if cell.first_delivery is None:
        return "-" if cell.path is None else f"{cell.path[0].upper()} -"
    text = f"{(cell.path or '?')[0].upper()} {cell.first_delivery:.2f}"
    return text + (f"/{cell.direct_after:.1f}" if cell.direct_after is not None else "")


def render(cells: Sequence[Cell]) -> str:
    """The matrix as text: rows senders, columns receivers, and the summary line."""
    names = list(MATRIX_PLAN.nodes)
    by_pair = {(c.src, c.dst): c for c in cells}
    width = max(len(n) for n in names) + 1
    col = 13
    lines = [" " * width + "".join(n[: col - 1].rjust(col) for n in names)]
    for src in names:
        row = [(by_pair[(src, dst)] if src != dst else None) for dst in names]
        lines.append(src.ljust(width) + "".join(
            (_cell_text(c) if c else "·").rjust(col) for c in row
        ))  # fmt: skip
    lines.append("")
    lines.append(
        "cell: path the sender settled on (D direct, R relay), seconds from both sidecars "
        "ready to the first delivered datagram / to the path turning direct"
    )
    lines.append(summary(cells))
    return "\n".join(lines)


def summary(cells: Sequence[Cell]) -> str:
    """``direct achieved/possible = X/Y; delivered pairs = A/B`` plus delivery times."""
    possible = [c for c in cells if c.direct_possible]
    achieved = [c for c in possible if c.path == "direct"]
    delivered = [c.first_delivery for c in cells if c.first_delivery is not None]
    line = (
        f"direct achieved/possible = {len(achieved)}/{len(possible)}; "
        f"delivered pairs = {len(delivered)}/{len(cells)}"
    )
    if delivered:
        line += (
            f"; first delivery median {statistics.median(delivered):.2f} s, "
            f"max {max(delivered):.2f} s, under 1 s: {sum(d < 1.0 for d in delivered)}"
        )
    routed = [c.first_send_to_delivery for c in cells if c.first_send_to_delivery is not None]
    if routed:
        line += (
            f"; from the first send: median {statistics.median(routed):.2f} s, "
            f"max {max(routed):.2f} s, under 1 s: {sum(d < 1.0 for d in routed)}"
        )
    directs = [c.direct_after for c in cells if c.direct_after is not None]
    if directs:
        line += (
            f"; direct after median {statistics.median(directs):.1f} s, max {max(directs):.1f} s"
        )
    return line


def predicted_summary(cells: Sequence[Cell]) -> str:
    """How many pairs only port prediction can make direct went direct, and when."""
    cand = [c for c in cells if c.why == PREDICTABLE]
    went = [c for c in cand if c.path == "direct"]
    line = (
        f"port prediction: {len(went)}/{len(cand)} endpoint-dependent vs port-restricted "
        f"ordered pairs direct ({sum(c.reason == 'predicted' for c in went)} predicted)"
    )
    times = [c.direct_after for c in went if c.direct_after is not None]
    if times:
        line += (
            f"; direct after median {statistics.median(times):.1f} s, "
            f"min {min(times):.1f} s, max {max(times):.1f} s"
        )
    return line


def draw(cells: Sequence[Cell], png: Path) -> None:
    """Write the matrix as a heat-map of first-delivery times (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(MATRIX_PLAN.nodes)
    by_pair = {(c.src, c.dst): c for c in cells}
    values = np.full((len(names), len(names)), np.nan)
    for i, src in enumerate(names):
        for j, dst in enumerate(names):
            cell = by_pair.get((src, dst))
            if cell is not None and cell.first_delivery is not None:
                values[i, j] = cell.first_delivery
    fig, ax = plt.subplots(figsize=(13, 11))
    cmap = plt.get_cmap("viridis_r").copy()
    cmap.set_bad("#d9d9d9")
    top = max(1.0, float(np.nanmax(values))) if np.isfinite(values).any() else 1.0
    image = ax.imshow(values, cmap=cmap, vmin=0.0, vmax=top)
    for i, src in enumerate(names):
        for j, dst in enumerate(names):
            cell = by_pair.get((src, dst))
            if cell is None:
                continue
            path = {"direct": "D", "relay": "R"}.get(cell.path or "", "-")
            want = (
                "D" if cell.direct_possible else ("T" if cell.expected == "stream-relay" else "R")
            )
            text = f"{path} (want {want})"
            if cell.first_delivery is not None:
                text += f"\n{cell.first_delivery:.2f} s"
            if cell.direct_after is not None:
                text += f"\ndirect {cell.direct_after:.1f} s"
            dark = cell.first_delivery is not None and cell.first_delivery > 0.6 * top
            color = "white" if dark else "black"
            if cell.direct_possible and cell.path != "direct":
                color = "#ff9090" if dark else "#b00000"
            ax.text(j, i, text, ha="center", va="center", fontsize=6.5, color=color)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("receiver")
    ax.set_ylabel("sender")
    ax.set_title(
        "natroute NAT matrix: settled path (D direct, R relay; want = what the NATs allow, "
        "T = TCP only)\nand seconds from both sidecars ready to the first delivered datagram; "
        f"grey: never delivered; red: direct possible, not achieved\n{summary(cells)}",
        fontsize=8,
    )
    fig.colorbar(image, ax=ax, label="first delivery (s after both sidecars ready)", shrink=0.8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def keep_logs(world: World, where: Path) -> None:
    """Write every node's sidecar log, ``/v1/status`` and ``/v1/peers`` to ``where``."""
    where.mkdir(parents=True, exist_ok=True)
    for name, node in world.nodes.items():
        (where / f"{name}.log").write_bytes(node.sidecar.logs())
        for view in ("status", "peers"):
            document = world.get(f"{node.admin}/v1/{view}")
            (where / f"{name}.{view}.json").write_text(json.dumps(document, indent=1) + "\n")
    print(f"logs: {where}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Build the matrix world, measure, print, draw. Returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--png", type=Path, default=DEFAULT_PNG, help="heat-map output")
    parser.add_argument("--json", type=Path, help="also write the cells as JSON")
    parser.add_argument("--settle", type=float, default=20.0,
                        help="seconds to let paths settle after the first deliveries")  # fmt: skip
    parser.add_argument("--deliver-timeout", type=float, default=90.0)
    parser.add_argument("--probe-interval", type=float, default=0.1)
    parser.add_argument("--logs", type=Path, metavar="DIR",
                        help="keep each node's sidecar log, status and peers in DIR")  # fmt: skip
    parser.add_argument("--predict", action="store_true",
                        help="port prediction on in every sidecar")  # fmt: skip
    args = parser.parse_args(argv)
    sidecar_env = dict(FAST_SIDECAR_ENV)
    if args.predict:
        sidecar_env["NATROUTE_SIDECAR_PREDICT"] = "true"
    client = engine_client()
    if client is None:
        print("no Docker engine answers (run .ci/docker-setup)", file=sys.stderr)
        return 1
    try:
        images = build_images(client)
        with Lab(client) as lab:
            started = time.monotonic()
            world = build_world(
                lab, images, MATRIX.routers, MATRIX.nodes, sidecar_env=sidecar_env,
                ready_timeout=120.0, app_command=("natroute-probe",),
                app_prefix="NATROUTE_PROBE_", demo_interval=args.probe_interval,
                report_interval=5.0, app_env={"NATROUTE_PROBE_PEER_REFRESH_INTERVAL": "0.2"},
            )  # fmt: skip
            try:
                print(f"matrix world: {len(world.nodes)} sidecars ready after "
                      f"{time.monotonic() - started:.0f} s", flush=True)  # fmt: skip
                cells = measure(world, args.deliver_timeout, args.settle)
                if args.logs is not None:
                    keep_logs(world, args.logs)
            finally:
                world.http.close()
    finally:
        client.close()
    print(render(cells))
    if args.predict:
        print(predicted_summary(cells))
    if args.json:
        args.json.write_text(json.dumps([asdict(c) for c in cells], indent=1) + "\n")
    draw(cells, args.png)
    print(f"heat-map: {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
