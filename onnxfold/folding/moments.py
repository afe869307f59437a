"""Second moments of what each consumer of a group reads, measured with onnxruntime on samples.

A *site* is a consumer's data input restricted to a group's channels: the input of a Conv
(group 1), a Gemm (transA 0) or a MatMul whose constant 2-D weight is its second input, on the
channel axis its weight contracts (Conv 1, Gemm 1, MatMul last), entries
[offset, offset + n·block) split as n channels of ``block`` entries each (a Flatten before a Gemm
gives each channel its H·W positions). Every sample, position and block entry is one observation
x ∈ ℝⁿ; :func:`measure` accumulates E[x xᵀ] and E[x] over them in float64.

:class:`ActivationStats` turns the measured sites into the :class:`~onnxfold.folding.compensate.
ConsumerStats` of a group (one per consumer member), or says why it cannot (a consumer that is not
one of the ops above, a site too wide to hold its n × n moment).

Samples: the user's (``--inputs``), else data-free ones (:mod:`onnxfold.folding.samples`), which
only approximate the real activations (the report says so).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxfold.analysis.group_producers import producer_of
from onnxfold.analysis.groups import SUM, ChannelGroup, Member
from onnxfold.analysis.registry import hook
from onnxfold.folding.compensate import ConsumerStats
from onnxfold.folding.features import member_matrix
from onnxfold.runtime.padding import padding_mask

log = logging.getLogger(__name__)
Feeds = dict[str, np.ndarray]
ValueFn = Callable[[str], np.ndarray]

#: A site with more channels than this keeps no n × n moment (8·n² bytes each).
MAX_SITE_CHANNELS = 4096


@dataclass(frozen=True)
class Site:
    """Channels [offset, offset + n·block) of ``tensor`` on ``axis``, n channels of ``block`` entries."""

    tensor: str
    axis: int
    offset: int
    block: int
    n: int


def consumer_site(member: Member, node: gs.Node | None, n: int) -> Site | str:
    """The :class:`Site` a consumer member reads, or why it has none."""
    if node is None:
        return f"consumer {member.node} not found"
    if (node.domain or "") not in ("", "ai.onnx") or node.op not in ("Conv", "Gemm", "MatMul"):
        return f"consumer {node.name} is a {node.op}"
    if len(node.inputs) < 2 or node.inputs[1].name != member.tensor:
        return f"consumer {node.name} does not read {member.tensor} as its weight"
    if node.op == "Conv" and int(node.attrs.get("group", 1)) != 1:
        return f"consumer {node.name} is a grouped Conv"
    if node.op == "Gemm" and int(node.attrs.get("transA", 0)):
        return f"consumer {node.name} is a Gemm with transA"
    if node.op == "MatMul" and len(node.inputs[1].shape or ()) != 2:
        return f"consumer {node.name} has a weight that is not 2-D"
    if member.axis != hook("weight_axes", node.op)(node)[1]:
        return f"{member.tensor} is not tied on its input axis"
    data = node.inputs[0]
    if isinstance(data, gs.Constant) or not data.name:
        return f"consumer {node.name} reads a constant"
    axis = 1 if node.op in ("Conv", "Gemm") else -1
    return Site(data.name, axis, member.offset, member.block, n)


def has_bias_slot(node: gs.Node, weight: str, graph_outputs: set[str]) -> bool:
    """Whether a constant input c can be moved into the consumer's bias exactly: a Gemm, or a Conv
    without padding (with zero padding, border outputs see fewer taps of c than the bias would add;
    there the uncentred fit, which zero padding keeps exact, is used instead)."""
    if node.op == "Conv":
        pads = node.attrs.get("pads") or ()
        padded = any(int(p) for p in pads) or node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID")
        if padded and any(int(d) > 1 for d in (node.inputs[1].shape or ())[2:]):
            return False
    return node.op in ("Conv", "Gemm") and producer_of(node, weight, graph_outputs) is not None


@dataclass
class SiteMoments:
    second: np.ndarray
    mean: np.ndarray
    count: int


def token_rows(value: np.ndarray, mask: np.ndarray | None, channel_axis: int) -> np.ndarray:
    """``value`` restricted to the masked-in (batch, sequence) positions when its leading two dims are
    the mask's and its channels are last (as transformer activations are); else unchanged."""
    v = np.asarray(value)
    if mask is None or v.ndim < 3 or v.shape[:2] != mask.shape or channel_axis % v.ndim != v.ndim - 1:
        return v
    return v[mask]


#: float64 values made at once per site: a site is read in slices of its leading axis holding at
#: most this many (a long signal's site as float64 rows held gigabytes: DNSMOS on 9 s clips, 6 GB)
OBSERVATION_CHUNK = 1 << 22


def _observations(value: np.ndarray, site: Site, mask: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """(observations, n) float64 rows of one site from one run's tensor (padded positions left out),
    in slices along the leading axis of at most :data:`OBSERVATION_CHUNK` values each."""
    moved = np.moveaxis(token_rows(value, mask, site.axis), site.axis, -1)
    lo, hi = site.offset, site.offset + site.n * site.block
    if moved.ndim == 1:
        moved = moved[None]
    per_row = max(1, int(np.prod(moved.shape[1:-1], dtype=np.int64)) * (hi - lo))
    step = max(1, OBSERVATION_CHUNK // per_row)
    for i in range(0, moved.shape[0], step):
        part = moved[i : i + step, ..., lo:hi].astype(np.float64)
        part = part.reshape(-1, site.n, site.block)
        yield np.ascontiguousarray(np.swapaxes(part, 1, 2)).reshape(-1, site.n)


def site_runs(
    model, sites: Sequence[Site], feeds: Iterable[Feeds]
) -> Iterator[Iterator[tuple[Site, np.ndarray]]]:
    """Per run of ``feeds``, (site, (observations, n) float64 values) for every site, made one slice
    of one site at a time (a long signal's float64 rows of every site at once held gigabytes; a site
    may come in several slices, in order): the model
    runs once per run in onnxruntime (no graph optimisation: it could fuse away an exposed tensor),
    the sites' tensors its only outputs and only the nodes they depend on kept."""
    from onnxfold.runtime.activations import _with_outputs
    from onnxfold.runtime.session import measurement_session

    sites = list(dict.fromkeys(sites))
    if not sites:
        return
    from onnxfold.folding.samples import chunked
    from onnxfold.runtime.coupled import feed_runs

    names = list(dict.fromkeys(s.tensor for s in sites))
    session = measurement_session(_with_outputs(model, dict.fromkeys(names, 0), only=True), optimize=False)
    most = None
    for i, given in enumerate(feeds):
        if i == 0:  # a heavy model's runs take fewer samples, unless its rows are read together
            most, _ = feed_runs(model, session, names, given)
        for feed in chunked(given, most) if most else [given]:
            values = dict(zip(names, session.run(names, feed), strict=True))
            mask = padding_mask(feed)
            yield ((s, x) for s in sites for x in _observations(values[s.tensor], s, mask))
            del values


def measure(model, sites: Sequence[Site], feeds: Iterable[Feeds]) -> dict[Site, SiteMoments]:
    """E[x xᵀ] and E[x] of every site over every run of ``feeds``."""
    sites = list(dict.fromkeys(sites))
    second = {s: np.zeros((s.n, s.n)) for s in sites}
    total = {s: np.zeros(s.n) for s in sites}
    count = dict.fromkeys(sites, 0)
    for run in site_runs(model, sites, feeds):
        for s, x in run:
            second[s] += x.T @ x
            total[s] += x.sum(axis=0)
            count[s] += len(x)
    return {
        s: SiteMoments(second[s] / max(count[s], 1), total[s] / max(count[s], 1), count[s]) for s in sites
    }


class ActivationStats:
    """Measured sites of a model's groups, and the :class:`ConsumerStats` of each group from them.

    ``source`` says where the samples came from (e.g. ``32 given samples``, ``data-free: 32 random
    samples``); ``fitted``: whether they are informative enough to fit merges and activation scores
    to (given, DeepInversion or random-token samples), not random inputs that are only judged on."""

    def __init__(
        self,
        moments: dict[Site, SiteMoments],
        sites: dict[str, dict[int, Site | str]],
        source: str,
        feeds: Sequence[Feeds] = (),
    ):
        self.moments = moments
        self.sites = sites
        self.source = source
        self.feeds = list(feeds)
        self.fitted = True
        self.orders: dict[tuple[str, int], np.ndarray] = {}  #: greedy orders by (group, per step)

    @classmethod
    def measure(
        cls, model, groups: Sequence[ChannelGroup], feeds: Sequence[Feeds], source: str
    ) -> ActivationStats:
        nodes = {n.name: n for n in model.graph.nodes}
        per_group: dict[str, dict[int, Site | str]] = {}
        wanted: list[Site] = []
        for g in groups:
            if not g.foldable:
                continue
            found: dict[int, Site | str] = {}
            for i, m in enumerate(g.members):
                if m.role != SUM:
                    continue
                site = consumer_site(m, nodes.get(m.node), g.size)
                if isinstance(site, Site) and site.n > MAX_SITE_CHANNELS:
                    site = f"{site.n} channels: above {MAX_SITE_CHANNELS}, no moment kept"
                found[i] = site
            if found and all(isinstance(s, Site) for s in found.values()):
                wanted += list(found.values())
            per_group[g.name] = found
        moments = measure(model, wanted, feeds) if wanted else {}
        return cls(moments, per_group, source, feeds)

    def why_not(self, group: ChannelGroup) -> str | None:
        """None when every consumer of ``group`` has measured statistics, else why not."""
        found = self.sites.get(group.name)
        if not found:
            return "no consumer with a weight (Conv, Gemm or MatMul) reads the group"
        for site in found.values():
            if isinstance(site, str):
                return site
            if site not in self.moments:
                return f"{site.tensor} was not measured"
        return None

    def keep(self, group: str, stats: list, k: int) -> np.ndarray:
        """:func:`~onnxfold.folding.compensate.greedy_keep` of ``group``'s consumer ``stats`` at k,
        from one greedy run per group and step size: a search plans a group at many widths, and on a
        12.4M WideResNet the greedy runs took a quarter of its time."""
        from onnxfold.folding.compensate import MAX_STEPS, greedy_order, steps_of

        step = steps_of(k)
        order = self.orders.get((group, step))
        if order is None or len(order) < k:
            order = greedy_order(stats, min(len(stats[0].mean), step * MAX_STEPS), step)
            self.orders[(group, step)] = order
        return np.sort(order[:k])

    def for_group(
        self, group: ChannelGroup, values: ValueFn, graph: gs.Graph
    ) -> tuple[list[int], list[ConsumerStats]] | None:
        """(member indices, their ConsumerStats) of ``group``'s consumers, or None (see :meth:`why_not`)."""
        if self.why_not(group) is not None:
            return None
        nodes = {n.name: n for n in graph.nodes}
        graph_outputs = {t.name for t in graph.outputs}
        index, stats = [], []
        for i, site in self.sites[group.name].items():
            m = group.members[i]
            mom = self.moments[site]
            rows = member_matrix(m, values(m.tensor), group.size)
            bias = has_bias_slot(nodes[m.node], m.tensor, graph_outputs) if m.node in nodes else False
            index.append(i)
            stats.append(ConsumerStats(mom.second, mom.mean, rows, bias))
        return index, stats
