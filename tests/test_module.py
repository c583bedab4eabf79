import torch
import torch.nn.functional as F

from sci2cl.module import (
    SCI2CLModule,
    info_nce,
    matching_loss,
    neighbourhood_contrastive,
    pairwise_symmetric_kl,
    refinement_consistency,
    symmetric_kl,
)


def test_info_nce_minimal_for_aligned_pairs():
    torch.manual_seed(0)
    z = F.normalize(torch.randn(64, 16), dim=1)
    aligned = info_nce(z, z, temperature=0.05)
    shuffled = info_nce(z, z[torch.randperm(64)], temperature=0.05)
    assert aligned < 0.05  # near its minimum of 0
    assert shuffled > 1.0
    # orthonormal pairs: logits I / tau, so each row's loss is -log(e^(1/t) / (e^(1/t) + n - 1))
    n, tau = 8, 0.5
    eye = torch.eye(n)
    expected = -torch.log(
        torch.exp(torch.tensor(1 / tau)) / (torch.exp(torch.tensor(1 / tau)) + n - 1)
    )
    torch.testing.assert_close(info_nce(eye, eye, tau), expected)
    # unrelated pairs (independent embeddings): about log(n), the loss of a uniform guess
    big = info_nce(torch.randn(512, 32), torch.randn(512, 32), temperature=1.0)
    assert abs(float(big) - float(torch.log(torch.tensor(512.0)))) < 0.1


def test_matching_loss_learns_to_separate_pairs():
    """A small classifier on concatenated pairs tells true from shuffled pairs within a few steps."""
    torch.manual_seed(0)
    a = torch.randn(256, 8)
    b = a + 0.05 * torch.randn(256, 8)  # partner carries the same signal
    clf = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    opt = torch.optim.Adam(clf.parameters(), lr=1e-2)
    label = torch.cat([torch.ones(256), torch.zeros(256)])
    first = None
    for _ in range(150):
        neg = b[torch.randperm(256)]
        logits = clf(torch.cat([torch.cat([a, b], 1), torch.cat([a, neg], 1)])).squeeze(-1)
        loss = matching_loss(logits, label)
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pos = clf(torch.cat([a, b], 1)).squeeze(-1)
        neg = clf(torch.cat([a, b[torch.randperm(256)]], 1)).squeeze(-1)
    assert float(loss) < 0.5 * first
    assert (pos > 0).float().mean() > 0.8 and (neg < 0).float().mean() > 0.8


def test_module_shapes_and_batch_independence():
    torch.manual_seed(0)
    w = {"rec": 1.0, "mse": 1.0, "moc": 1.0, "mom": 1.0}
    mod = SCI2CLModule(
        {"rna": 30, "atac": 50},
        {"rna": "zinb", "atac": "zinb"},
        n_hidden=32,
        n_latent=16,
        weights=w,
        n_negatives=2,
        hard_negatives=True,
    )
    mod.eval()
    x = {"rna": torch.poisson(torch.rand(20, 30) * 3), "atac": torch.poisson(torch.rand(20, 50))}
    z = mod.joint_embedding(x)
    assert z.shape == (20, 16)
    # a cell's embedding must not depend on its batch-mates
    z_alone = mod.joint_embedding({k: v[:1] for k, v in x.items()})
    z_perm = mod.joint_embedding({k: v.flip(0) for k, v in x.items()})
    torch.testing.assert_close(z[:1], z_alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(z.flip(0), z_perm, atol=1e-5, rtol=1e-5)
    out = mod.loss(x, "joint")
    assert {"rec", "mse", "moc", "mom", "loss"} <= set(out)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in out.values())


def test_symmetric_kl_zero_iff_equal():
    p = torch.randn(10, 5)
    assert torch.allclose(symmetric_kl(p, p), torch.zeros(10), atol=1e-6)
    assert (symmetric_kl(p, torch.randn(10, 5)) > 0).all()
    assert torch.allclose(
        symmetric_kl(p, p + 3.0), torch.zeros(10), atol=1e-5
    )  # softmax shift invariance


def test_pairwise_symmetric_kl_matches_symmetric_kl_of_each_pair():
    torch.manual_seed(1)
    p, q = torch.randn(6, 5), torch.randn(4, 5)
    d = pairwise_symmetric_kl(p, q)
    assert d.shape == (6, 4)
    want = torch.stack([symmetric_kl(p, q[j].expand_as(p)) for j in range(4)], 1)
    assert torch.allclose(d, want, atol=1e-5)
    assert torch.allclose(pairwise_symmetric_kl(p, p).diagonal(), torch.zeros(6), atol=1e-5)


def test_neighbourhood_loss_is_bounded_as_neighbourhoods_collapse():
    """The mean ratio saturates at 0: collapsing neighbours further buys almost nothing."""
    torch.manual_seed(0)
    lab = torch.arange(40) % 4
    centers = torch.randn(4, 8) * 5
    adj = (lab[:, None] == lab[None, :]).float() - torch.eye(40)
    losses = [
        float(neighbourhood_contrastive(h, h, adj))
        for h in (centers[lab] + s * torch.randn(40, 8) for s in (0.3, 0.03, 0.0))
    ]
    assert losses[0] > losses[1] >= losses[2] >= 0
    assert losses[1] - losses[2] < 0.01


def test_neighbourhood_and_refinement_losses_prefer_graph_structure():
    torch.manual_seed(0)
    centers = torch.randn(4, 8) * 5
    lab = torch.arange(40) % 4
    h = centers[lab] + 0.1 * torch.randn(40, 8)
    adj = (lab[:, None] == lab[None, :]).float() - torch.eye(40)
    good = neighbourhood_contrastive(h, h, adj)
    bad = neighbourhood_contrastive(h, h[torch.randperm(40)], adj)
    # a ratio of mean divergences: ~1 when neighbours are no closer than the rest
    assert 0 <= good < 0.1 < 0.5 < bad
    r = F.one_hot(lab, 4).float()
    assert refinement_consistency(r, r, adj) < 1e-6
    assert refinement_consistency(r, r[torch.randperm(40)], adj) > 0.1
