"""Gather helpers: no-ops on one process; 2 gloo ranks reproduce the single-process losses.

The exact equality implemented (docs/METHOD.md §2, "DDP"): every rank loss is
``world_size * (sum of its anchors' losses) / (valid anchors over all ranks)``, with keys
gathered from all ranks. Hence, for the same data split into rank batches:
- mean over ranks of the rank losses == single-process loss on the concatenated batch;
- mean over ranks of the parameter gradients (what DDP applies) == single-process gradient;
- the gradient a rank's *inputs* receive == world_size * single-process input gradient
  (DDP's averaging divides it back when it reaches the parameters);
- the memories are identical on every rank and equal the single-process memory.
PGCL's anchor sampling is random per call, so the check uses no anchor cap.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from dscnet.losses.cross_stream import CrossStreamContrast
from dscnet.losses.pgcl import PixelGroupContrast
from dscnet.losses.sgcl import SemanticGraphContrast
from dscnet.models.heads.semantic_graph import SemanticGraph
from dscnet.utils.distributed import (
    all_gather_variable,
    all_gather_with_grad,
    all_reduce_sum,
    get_rank,
    get_world_size,
    is_dist,
)

WORLD = 2
B = 4  # images per rank: 2 groups of K = 2
K = 2
C = 3
IN_DIM, DIM = 6, 8
NODES_PER_RANK = (5, 3)  # different counts exercise the padded variable-size gather


def test_single_process_helpers_are_no_ops():
    x = torch.randn(3, 2, requires_grad=True)
    assert not is_dist() and get_rank() == 0 and get_world_size() == 1
    assert all_gather_with_grad(x) is x
    out, sizes = all_gather_variable(x, return_sizes=True)
    assert out is x and sizes == [3]
    reduced = all_reduce_sum(x)
    assert torch.equal(reduced, x) and not reduced.requires_grad


def _make_data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    data: dict[str, torch.Tensor] = {}
    for step in (0, 1):
        for r in range(WORLD):
            n = NODES_PER_RANK[r]
            data[f"x{step}_{r}"] = torch.randn(n, IN_DIM, generator=g)
            data[f"cls{step}_{r}"] = torch.randint(0, C + 1, (n,), generator=g)
            data[f"img{step}_{r}"] = torch.sort(torch.randint(0, B, (n,), generator=g)).values
            data[f"emb{step}_{r}"] = torch.randn(B, DIM, 4, 4, generator=g)
            lab = torch.randint(0, C + 1, (B, 8, 8), generator=g)
            lab[:, :2] = 255
            data[f"lab{step}_{r}"] = lab
    torch.manual_seed(0)
    for k, v in SemanticGraph(IN_DIM, node_dim=DIM, rounds=2, heads=2).state_dict().items():
        data[f"graph.{k}"] = v
    return data


def _inputs(data, step: int, ranks: list[int]) -> dict[str, torch.Tensor]:
    """This process's batch: the concatenation of the given ranks' parts (image ids global)."""
    out = {
        "x": torch.cat([data[f"x{step}_{r}"] for r in ranks]),
        "cls": torch.cat([data[f"cls{step}_{r}"] for r in ranks]),
        "img": torch.cat([data[f"img{step}_{r}"] + i * B for i, r in enumerate(ranks)]),
        "emb": torch.cat([data[f"emb{step}_{r}"] for r in ranks]),
        "lab": torch.cat([data[f"lab{step}_{r}"] for r in ranks]),
    }
    return out


def _run(data, ranks: list[int]) -> dict[str, torch.Tensor]:
    """Two training steps of graph + SGCL + PGCL + cross on this process's batch."""
    graph = SemanticGraph(IN_DIM, node_dim=DIM, rounds=2, heads=2)
    graph.load_state_dict({k[6:]: v for k, v in data.items() if k.startswith("graph.")})
    sgcl = SemanticGraphContrast(C, temperature=0.2, memory="queue", memory_size=64, embed_dim=DIM)
    pgcl = PixelGroupContrast(C, temperature=0.2, max_anchors=None, memory_size=512, embed_dim=DIM)
    cross = CrossStreamContrast(temperature=0.2, max_anchors=None)
    result: dict[str, torch.Tensor] = {}
    for step in (0, 1):
        inp = _inputs(data, step, ranks)
        x = inp["x"].clone().requires_grad_()
        emb_raw = inp["emb"].clone().requires_grad_()
        emb = F.normalize(emb_raw, dim=1)
        nodes = F.normalize(graph(x), dim=-1)
        losses = {
            "sgcl": sgcl(nodes, inp["cls"], inp["img"]),
            "pgcl": pgcl(emb, inp["lab"], K),
            "cross": cross(emb, inp["lab"], nodes, inp["cls"], inp["img"], K),
        }
        graph.zero_grad()
        sum(losses.values()).backward()
        for name, value in losses.items():
            result[f"{name}{step}"] = value.detach()
        result[f"grad_x{step}"] = x.grad
        result[f"grad_emb{step}"] = emb_raw.grad
        for k, p in graph.named_parameters():
            result[f"grad_{k}{step}"] = p.grad.clone()
    result["sgcl_memory"] = sgcl.memory.get()[0]
    return result


def _worker(rank: int, world: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{tmp}/rendezvous",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=30),
    )
    try:
        data = torch.load(Path(tmp) / "data.pt", weights_only=True)
        torch.save(_run(data, [rank]), Path(tmp) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_match_single_process(tmp_path):
    data = _make_data()
    torch.save(data, tmp_path / "data.pt")
    mp.spawn(_worker, args=(WORLD, str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    single = _run(data, list(range(WORLD)))

    def close(a, b):
        return torch.allclose(a, b, rtol=1e-4, atol=1e-6)

    for step in (0, 1):
        for name in ("sgcl", "pgcl", "cross"):
            mean = sum(r[f"{name}{step}"] for r in ranks) / WORLD
            assert single[f"{name}{step}"] > 0, name
            assert close(mean, single[f"{name}{step}"]), (name, step, mean, single[f"{name}{step}"])
        for key in ("x", "emb"):
            split = torch.split(single[f"grad_{key}{step}"], [
                r[f"grad_{key}{step}"].shape[0] for r in ranks])
            for r, part in zip(ranks, split):
                assert close(r[f"grad_{key}{step}"] / WORLD, part), (key, step)
        params = [k for k in single if k.startswith("grad_") and k.endswith(str(step))]
        params = [k for k in params if not k.startswith(("grad_x", "grad_emb"))]
        assert len(params) == 18  # weights and biases: g_s (Linear, LN, Linear), 2 x (qkv, out, norm)
        for k in params:
            mean = sum(r[k] for r in ranks) / WORLD
            assert close(mean, single[k]), k
    # Memories identical on every rank and equal to the single-process memory.
    assert torch.equal(ranks[0]["sgcl_memory"], ranks[1]["sgcl_memory"])
    assert close(ranks[0]["sgcl_memory"], single["sgcl_memory"])
