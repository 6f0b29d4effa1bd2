import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sdcorr.stats.pck import PCK, pck, pck_correct

# Three pairs, threshold 100 (alpha 0.05 -> 5 px, 0.1 -> 10 px). Errors in px:
#   pair a (cat):  3, 7, 20, [pad]      -> @0.05: 1/3, @0.1: 2/3
#   pair b (cat):  0, 12                -> @0.05: 1/2, @0.1: 1/2
#   pair c (dog):  9                    -> @0.05: 0/1, @0.1: 1/1
ERRORS = [[3.0, 7.0, 20.0, 0.0], [0.0, 12.0, 0.0, 0.0], [9.0, 0.0, 0.0, 0.0]]
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
CATS = ["cat", "cat", "dog"]


def batch():
    target = torch.rand(3, 4, 2) * 50
    preds = target.clone()
    preds[..., 0] += torch.tensor(ERRORS)  # offset along x only
    preds[~MASK] += 1000.0  # padding far away: must be ignored
    return preds, target, torch.full((3,), 100.0)


def test_hand_computed_per_image_and_per_point():
    preds, target, threshold = batch()
    out = pck(preds, target, threshold, MASK, alphas=[0.05, 0.1])
    assert torch.allclose(out["per_image"], torch.tensor([(1 / 3 + 1 / 2 + 0) / 3, (2 / 3 + 1 / 2 + 1) / 3]))
    assert torch.allclose(out["per_point"], torch.tensor([2 / 6, 4 / 6]))


def test_class_matches_functional_and_breaks_down_by_category():
    preds, target, threshold = batch()
    metric = PCK(alphas=[0.05, 0.1])
    metric.update(preds[:2], target[:2], threshold[:2], MASK[:2], CATS[:2])
    metric.update(preds[2:], target[2:], threshold[2:], MASK[2:], CATS[2:])
    res = metric.compute()
    assert res["overall"]["num_pairs"] == 3 and res["overall"]["num_keypoints"] == 6
    assert res["overall"]["pck@0.1"]["per_image"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert res["overall"]["pck@0.05"]["per_point"] == pytest.approx(2 / 6)
    assert res["per_category"]["cat"]["pck@0.05"]["per_image"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert res["per_category"]["cat"]["pck@0.1"]["per_point"] == pytest.approx(3 / 5)
    assert res["per_category"]["dog"]["pck@0.1"]["per_image"] == pytest.approx(1.0)
    assert res["per_category"]["dog"]["pck@0.05"]["per_image"] == pytest.approx(0.0)


def test_naive_loop_reference():
    torch.manual_seed(0)
    preds, target = torch.rand(5, 7, 2) * 100, torch.rand(5, 7, 2) * 100
    mask = torch.rand(5, 7) > 0.3
    mask[:, 0] = True
    threshold = torch.rand(5) * 100 + 50
    out = pck(preds, target, threshold, mask, alphas=[0.1, 0.2])
    for a, alpha in enumerate([0.1, 0.2]):
        per_image, hits, count = [], 0, 0
        for b in range(5):
            ok = [
                float(torch.dist(preds[b, n], target[b, n])) <= alpha * float(threshold[b])
                for n in range(7)
                if mask[b, n]
            ]
            per_image.append(sum(ok) / len(ok))
            hits, count = hits + sum(ok), count + len(ok)
        assert float(out["per_image"][a]) == pytest.approx(sum(per_image) / 5)
        assert float(out["per_point"][a]) == pytest.approx(hits / count)


def test_scale_maps_offsets_into_the_threshold_space():
    # an x offset of 8 px scaled by 0.5 is 4 <= 0.05 * 100
    correct = pck_correct(
        torch.tensor([[[8.0, 0.0]]]), torch.zeros(1, 1, 2), torch.tensor([100.0]), [0.05], torch.tensor([[0.5, 1.0]])
    )
    assert correct.tolist() == [[[True]]]


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="Expected threshold"):
        pck(torch.zeros(2, 3, 2), torch.zeros(2, 3, 2), torch.ones(3))
    with pytest.raises(ValueError, match="alphas"):
        PCK(alphas=[])


def test_unscored_pairs_and_empty_pairs():
    metric = PCK()
    metric.skip()
    metric.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), torch.ones(1), torch.zeros(1, 2, dtype=torch.bool), ["x"])
    res = metric.compute()
    assert res["unscored_pairs"] == 1 and res["overall"]["num_pairs"] == 0


def _ddp_worker(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    preds, target, threshold = batch_seeded()
    metric = PCK(alphas=[0.05, 0.1])
    # uneven split: rank 0 gets pairs 0 and 1, rank 1 gets pair 2 (the only dog) and one unscored pair, rank 2
    # none (fewer pairs than processes): it still joins the gather, with states of the others' shapes and dtypes
    idx = [[0, 1], [2], []][rank]
    if idx:
        metric.update(preds[idx], target[idx], threshold[idx], MASK[idx], [CATS[i] for i in idx])
    if rank == 1:
        metric.skip()
    untouched = PCK(alphas=[0.05, 0.1]).compute()  # no update on any process: synced states are empty
    queue.put((rank, (metric.compute(), untouched["overall"]["num_pairs"])))
    dist.destroy_process_group()


def batch_seeded():
    torch.manual_seed(0)
    return batch()


@pytest.mark.slow
def test_three_process_ddp_with_an_idle_process_equals_one_process():
    preds, target, threshold = batch_seeded()
    single = PCK(alphas=[0.05, 0.1])
    single.update(preds, target, threshold, MASK, CATS)
    single.skip()
    expected = single.compute()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = 29500 + os.getpid() % 1000
    procs = [ctx.Process(target=_ddp_worker, args=(r, 3, port, queue)) for r in range(3)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert results == {rank: (expected, 0) for rank in range(3)}
