"""Lowering time: XNNPACK's per-partition passes, minus the ones that cannot match a MobileLLM graph.

XnnpackBackend.preprocess runs 17 graph passes on every partition, each a full re-trace with fake
tensors; a 60-block model has 61 partitions, so these passes are ~35% of `lower to XNNPACK`. Eight
of them rewrite ops this model never contains (upsampling, aten SDPA (ours is llama::custom_sdpa,
outside the delegate), batch norm, max-pool getitems, padding, conv1d, PReLU). Skipping them is
exact: on the trained `tiny`, the .pte with and without them is the same size and its logits are
bit-identical (max |diff| 0.0); the tests pin that the pruned passes only skip ops that are absent.

ExecuTorch offers no public switch for the pass list (only a `dqlinear_partitioner` compile spec
that drops all but ConvertToLinearPass, which changes numerics), so this swaps the pass manager
that `xnnpack_preprocess` constructs, for the duration of one lowering, on the pinned version only.

Before partitioning, `to_edge_transform_and_lower` decomposes the graph three times when a
partitioner hands it a per-node check of the ops it asks to keep (XNNPACK does: is this linear's
dtype supported): once to functionalize, once without the kept ops, and once more after hiding the
nodes that passed the check. When every node of a kept op passes, that third whole-graph re-trace
changes nothing, and `Partitioner` tells ExecuTorch so (no check): ~20% of `lower to XNNPACK` on
`tiny`, the same .pte bytes (tests pin both)."""
from __future__ import annotations

import contextlib

# pass name -> the ops whose presence it needs (if any of these is in the graph, the pass stays)
UNUSED = {
    "ConvertToUpsampleBilinear2d": ("upsample", "grid_sampler"),
    "ConvertToSDPAPass": ("scaled_dot_product", "_softmax", "bmm", "baddbmm"),
    "FuseBatchNormPass": ("batch_norm",),
    "DecomposeBatchNorm": ("batch_norm",),
    "RemoveGetItemPass": ("max_pool",),
    "InsertPadQDQPass": ("pad",),
    "Conv1dUnsqueezePass": ("conv",),
    "PReLUReshapePass": ("prelu",),
    "FuseActivationPass": ("relu", "hardtanh"),  # folds these into the op before them; a MobileLLM has SiLU only
    "DecomposeConcatenate": ("cat",),  # splits cats of more than four inputs
}
PINNED = "1.5.1"


def _op_names(ep) -> set[str]:
    return {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}


def prunable(ep) -> list[str]:
    """Names of the passes that can be skipped for this program: none of their ops occur in it."""
    ops = _op_names(ep)
    return [p for p, needles in UNUSED.items() if not any(k in op for op in ops for k in needles)]


@contextlib.contextmanager
def skip_unused_passes(ep):
    """Within the block, XNNPACK preprocess runs its default passes minus `prunable(ep)`."""
    from importlib.metadata import version

    import executorch.backends.xnnpack.xnnpack_preprocess as XP
    skip = set(prunable(ep))
    if version("executorch").split("+")[0] != PINNED or not skip:
        yield []
        return
    base = XP.XNNPACKPassManager

    def manager(program, passes=None):
        pm = base(program, passes=passes)
        if passes is None:
            pm.passes = [p for p in pm.passes if p.__name__ not in skip]
        return pm

    XP.XNNPACKPassManager = manager
    try:
        yield sorted(skip)
    finally:
        XP.XNNPACKPassManager = base


def partitioner():
    """XNNPACK's partitioner; on the pinned version, without the per-node decomposition check when that check
    keeps every node it is asked about (then it decides nothing, and costs a whole-graph re-trace)."""
    from importlib.metadata import version

    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    class Partitioner(XnnpackPartitioner):
        checked: bool | None = None  # whether the last decomposition kept the per-node check

        def ops_to_not_decompose(self, ep):
            ops, check = super().ops_to_not_decompose(ep)
            if check is None or version("executorch").split("+")[0] != PINNED:
                return ops, check
            keep = set(ops)
            kept = [n for n in ep.graph.nodes if n.op == "call_function" and n.target in keep]
            if not kept:  # an edge graph (after lowering: ExecuTorch's sanity check): the check as XNNPACK gives it
                return ops, check
            self.checked = not all(check(n) for n in kept)
            return ops, (check if self.checked else None)

    return Partitioner()
