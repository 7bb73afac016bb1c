"""The pure torch fusion network and its losses."""

import math

import pytest
import torch

from medmix_sklearn.fusion._losses import FusionLoss, auxiliary_loss
from medmix_sklearn.fusion._network import (
    MODALITY_FUSIONS,
    FusionOutput,
    MedMIXNetwork,
    masked_softmax,
)

# Two modalities of two experts, one tabular modality: blocks in column order.
DIMS = [5, 4, 3, 6, 2]
MODALITY = [0, 0, 1, 1, 2]
NORM = [True, True, True, True, False]


def make_net(modality_fusion="attention", expert_fusion="gate", **kw):
    torch.manual_seed(0)
    net = MedMIXNetwork(DIMS, MODALITY, NORM, n_classes=3, hidden_dim=8,
                        expert_fusion=expert_fusion, modality_fusion=modality_fusion, **kw)
    return net.eval()


def make_batch(n=64, p_present=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, sum(DIMS), generator=g)
    mask = torch.rand(n, len(DIMS), generator=g) < p_present
    return x, mask


def zero_absent(x, mask):
    cols = torch.repeat_interleave(mask, torch.tensor(DIMS), dim=1)
    return torch.where(cols, x, torch.zeros(()))


def run(net, x, mask):
    with torch.no_grad():
        return FusionOutput(*net(x, mask))


@pytest.mark.parametrize("modality_fusion", MODALITY_FUSIONS)
@pytest.mark.parametrize("expert_fusion", ["gate", "mean"])
def test_values_in_absent_blocks_do_not_change_any_output(modality_fusion, expert_fusion):
    net = make_net(modality_fusion, expert_fusion)
    x, mask = make_batch()
    noisy = run(net, x * 1e3, mask)  # large finite garbage in absent blocks
    clean = run(net, zero_absent(x * 1e3, mask), mask)
    for a, b in zip(noisy, clean):
        assert torch.equal(a, b)


@pytest.mark.parametrize("modality_fusion", MODALITY_FUSIONS)
def test_rows_without_any_modality_get_the_same_finite_prior(modality_fusion):
    net = make_net(modality_fusion)
    x, mask = make_batch(n=8)
    mask[:4] = False
    out = run(net, x, mask)
    assert torch.isfinite(out.logits).all()
    assert torch.allclose(out.logits[:4], out.logits[:1].expand(4, -1))
    assert torch.equal(out.expert_weights[:4], torch.zeros(4, len(DIMS)))
    assert torch.equal(out.modality_weights[:4], torch.zeros(4, 3))


@pytest.mark.parametrize("modality_fusion", MODALITY_FUSIONS)
def test_weights_are_distributions_over_what_is_present(modality_fusion):
    net = make_net(modality_fusion)
    x, mask = make_batch(n=200)
    out = run(net, x, mask)
    w_e, w_m = out.expert_weights, out.modality_weights
    assert (w_e >= 0).all() and (w_m >= 0).all()
    assert torch.equal(w_e[~mask], torch.zeros_like(w_e[~mask]))
    member = torch.nn.functional.one_hot(torch.tensor(MODALITY)).float()  # (B, M)
    mod_present = (mask.float() @ member) > 0
    assert torch.equal(out.modality_mask.bool(), mod_present)
    per_modality = w_e @ member
    assert torch.allclose(per_modality[mod_present], torch.ones(int(mod_present.sum())), atol=1e-6)
    assert torch.equal(per_modality[~mod_present], torch.zeros(int((~mod_present).sum())))
    assert torch.equal(w_m[~mod_present], torch.zeros_like(w_m[~mod_present]))
    any_present = mod_present.any(dim=1)
    assert torch.allclose(w_m[any_present].sum(dim=1), torch.ones(int(any_present.sum())), atol=1e-6)


def test_expert_missing_inside_present_modality_is_masked_out_of_the_gate():
    net = make_net()
    x, _ = make_batch(n=4)
    mask = torch.ones(4, len(DIMS), dtype=torch.bool)
    mask[:, 1] = False  # second expert of modality 0 missing
    out = run(net, x, mask)
    assert torch.equal(out.expert_weights[:, 1], torch.zeros(4))
    assert torch.allclose(out.expert_weights[:, 0], torch.ones(4))
    # The gate is sample-specific: the two experts of modality 1 get different weights per row.
    assert out.expert_weights[:, 2].unique().numel() > 1


def test_masked_softmax_with_nothing_present_is_zero_not_nan():
    scores = torch.randn(3, 4)
    mask = torch.tensor([[True, False, True, False], [False] * 4, [True] * 4])
    w = masked_softmax(scores, mask, dim=1)
    assert torch.equal(w[1], torch.zeros(4))
    assert torch.equal(w[0, [1, 3]], torch.zeros(2))
    assert torch.allclose(w.sum(dim=1), torch.tensor([1.0, 0.0, 1.0]))


def test_modality_dropout_keeps_one_present_modality():
    net = make_net(modality_dropout=1.0).train()
    torch.manual_seed(1)
    mod_mask = torch.rand(500, 3) < 0.6
    kept = net._drop_modalities(mod_mask)
    has_any = mod_mask.any(dim=1)
    assert torch.equal(kept.sum(dim=1)[has_any], torch.ones(int(has_any.sum()), dtype=torch.long))
    assert not kept[~has_any].any()
    assert not (kept & ~mod_mask).any()  # never revives an absent modality


def test_loss_and_gradients_finite_with_90_percent_of_blocks_missing():
    net = make_net(modality_dropout=0.3).train()
    x, mask = make_batch(n=256, p_present=0.1, seed=3)
    assert (~mask.any(dim=1)).any()  # some rows have nothing at all
    y = torch.randint(0, 3, (256,))
    loss = FusionLoss(aux_weight=0.5)(net(x, mask), y, torch.rand(256))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_loss_weights():
    net = make_net()
    x, mask = make_batch(n=32)
    y = torch.randint(0, 3, (32,))
    out = net(x, mask)
    sw = torch.rand(32) + 0.1
    crit = FusionLoss(aux_weight=0.0)
    # Rescaling all weights changes nothing; a class weight equals the same per-row weight.
    assert torch.allclose(crit(out, y, sw), crit(out, y, 7 * sw))
    cw = torch.tensor([1.0, 3.0, 0.5])
    assert torch.allclose(FusionLoss(class_weight=cw)(out, y, sw), crit(out, y, sw * cw[y]))
    # Uniform weights give plain cross-entropy.
    ce = torch.nn.functional.cross_entropy(out[0], y)
    assert torch.allclose(crit(out, y), ce)
    # The auxiliary term is added in training only.
    with_aux = FusionLoss(aux_weight=2.0)
    assert torch.allclose(with_aux(out, y, training=False), ce)
    expected = ce + 2.0 * auxiliary_loss(out[1], y, out[4], torch.ones(32))
    assert torch.allclose(with_aux(out, y, training=True), expected)


def test_auxiliary_loss_uses_only_rows_where_the_modality_is_present():
    aux = torch.zeros(4, 2, 2)
    aux[:, 0, 1] = 10.0  # modality 0 predicts class 1 confidently
    y = torch.tensor([1, 1, 0, 0])
    present = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    loss = auxiliary_loss(aux, y, present, torch.ones(4))
    # Modality 0 is right on the rows it has (loss ~0); modality 1 is uniform (log 2).
    assert loss.item() == pytest.approx(math.log(2) / 2, abs=1e-4)
    assert auxiliary_loss(aux, y, torch.zeros(4, 2), torch.ones(4)).item() == 0.0


def test_invalid_configuration_messages():
    with pytest.raises(ValueError, match="modality_fusion must be one of"):
        MedMIXNetwork(DIMS, MODALITY, NORM, 2, modality_fusion="max")
    with pytest.raises(ValueError, match="block_modality must cover"):
        MedMIXNetwork([3, 3], [0, 2], [True, True], 2)


def test_pattern_prior_adds_one_bias_per_observed_pattern():
    net = make_net(pattern_prior=True)
    assert net.pattern_logits.shape == (2**3, 3)
    x, mask = make_batch(n=32)
    base = run(net, x, mask).logits
    with torch.no_grad():
        net.pattern_logits[0b011] += torch.tensor([1.0, -2.0, 0.5])  # modalities 0 and 1 present, 2 absent
    shifted = run(net, x, mask).logits
    mod_mask = run(net, x, mask).modality_mask.bool()
    hit = mod_mask[:, 0] & mod_mask[:, 1] & ~mod_mask[:, 2]
    assert hit.any() and (~hit).any()
    torch.testing.assert_close(shifted[hit] - base[hit], torch.tensor([1.0, -2.0, 0.5]).expand(int(hit.sum()), 3))
    torch.testing.assert_close(shifted[~hit], base[~hit])


def test_pattern_prior_reads_the_pattern_before_modality_dropout():
    net = make_net(pattern_prior=True, modality_dropout=0.9)
    x, mask = make_batch(n=64, p_present=1.0)
    with torch.no_grad():
        net.pattern_logits[0b111, 0] = 100.0  # only the full pattern gets a huge class-0 bias
    net.train()
    with torch.no_grad():
        logits = FusionOutput(*net(x, mask)).logits
    assert (logits.argmax(dim=1) == 0).all()


def test_pattern_prior_refuses_too_many_modalities():
    with pytest.raises(ValueError, match="pattern_prior"):
        MedMIXNetwork([1] * 13, list(range(13)), [False] * 13, n_classes=2, pattern_prior=True)


def test_linear_path_adds_a_linear_map_of_the_present_blocks_only():
    net = make_net(linear_path=True)
    x, mask = make_batch()
    with_path = run(net, x * 1e3, mask)  # garbage in absent blocks must not reach the path
    with torch.no_grad():
        expected_linear = net.linear(zero_absent(x * 1e3, mask))
        net.linear.weight.zero_()
    without = run(net, x * 1e3, mask)
    torch.testing.assert_close(with_path.logits - without.logits, expected_linear)
    assert torch.equal(with_path.aux_logits, without.aux_logits)  # the unimodal heads skip it


def test_linear_path_starts_at_zero():
    from medmix_sklearn.fusion._network import init_parameters

    net = init_parameters(make_net(linear_path=True), torch.Generator().manual_seed(0))
    assert not net.linear.weight.any()
