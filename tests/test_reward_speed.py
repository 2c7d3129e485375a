"""The frozen CNN's fast path (channels-last maps, a written-out input gradient) computes
what the plain autograd ops compute: the reward model's features, its score and spread,
and their gradients in the image, within float rounding."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.data.datasets import load_by_name
from core.feedback.reward_model import train_reward_model
from core.quality.classifier import SmallCNN, _init_, load_or_train_classifier
from core.quality.judges import get_judge, wide_cnn

TOL = dict(rtol=1e-5, atol=1e-5)


def plain_convolve(model: SmallCNN, x: torch.Tensor):
    """The maths before the fast path, op for op."""
    img = x.reshape(-1, *model.image_shape)
    c1 = F.relu(model.conv1(img))
    c2 = F.relu(model.conv2(F.max_pool2d(c1, 2)))
    return F.max_pool2d(c2, 2), c1.mean((2, 3)), c2.mean((2, 3))


def values_and_input_grads(fn, x: torch.Tensor):
    x = x.clone().requires_grad_(True)
    outs = fn(x)
    gen = torch.Generator().manual_seed(3)
    loss = sum(torch.tanh(o.reshape(len(o), -1) @ torch.randn(o[0].numel(), generator=gen)).sum()
               for o in outs)
    loss.backward()
    return [o.detach() for o in outs], x.grad


@pytest.mark.parametrize("make", [lambda: SmallCNN((1, 28, 28), 10),
                                  lambda: wide_cnn((1, 28, 28), 10)])
def test_frozen_convolve_equals_the_plain_ops(make):
    model = make()
    _init_(model, torch.Generator().manual_seed(0))
    model.eval().requires_grad_(False)
    # random pixels: no exact ties in the max-pools (on a flat background, which of
    # tied pixels gets the gradient can hang on a rounding; the real digits below have one)
    x = torch.rand(64, 784, generator=torch.Generator().manual_seed(1)) * 2 - 1
    fast, g_fast = values_and_input_grads(model.convolve, x)
    plain, g_plain = values_and_input_grads(lambda v: plain_convolve(model, v), x)
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a, b, **TOL)
    torch.testing.assert_close(g_fast, g_plain, **TOL)
    assert g_plain.abs().max() > 0
    # training (weights that need gradients) keeps the plain ops
    model.requires_grad_(True)
    assert model.convolve(x)[0].grad_fn.name() != "_FrozenConvsBackward"


@pytest.mark.parametrize("features", ["multi", "robust"])
def test_reward_score_spread_and_gradient_equal_the_old_maths(features):
    data = load_by_name("mnist5k")
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(len(data.x), (120,), generator=gen)
    model = train_reward_model(data.x[idx[:60]], data.x[idx[60:]],
                               torch.randint(0, 2, (60,), generator=gen).float(), data,
                               features=features, max_epochs=5)
    cnn = (load_or_train_classifier(data).model if features == "multi"
           else get_judge("robust", data).model)

    def old_features(x):   # the features as they were computed before the fast path
        img = x.float().reshape(-1, *cnn.image_shape)
        pooled, m1, m2 = plain_convolve(cnn, img)
        feats = F.relu(cnn.fc1(pooled.flatten(1)))
        out = [feats, F.log_softmax(cnn.fc2(feats), 1)]
        if features == "multi":
            out += [m1, m2, img.mean((1, 2, 3)).unsqueeze(1)]
        return torch.cat(out, 1)

    x = data.x[:64]   # real digits: flat backgrounds, ties in the max-pools
    new, g_new = values_and_input_grads(model.score_and_spread, x)
    model._features = old_features
    old, g_old = values_and_input_grads(model.score_and_spread, x)
    for a, b in zip(new, old):
        torch.testing.assert_close(a, b, **TOL)
    torch.testing.assert_close(g_new, g_old, **TOL)
    assert g_old.abs().max() > 0
