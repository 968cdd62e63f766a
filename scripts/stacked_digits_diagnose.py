"""Where a Stacked Digits generator loses `confident`: per channel, between which digits, how far
from the training digits, and under truncated noise. Prints what the README's "Where the rest of
the gap is" quotes.

    python scripts/stacked_digits_diagnose.py RUN [--n 26000] [--seed 0] [--psi 1,0.9,0.8,0.7,0.5]

RUN is a run folder of `igm train dataset=stacked_digits dataset.resolution=8` (its generator is
loaded as `igm sample` loads it, with the EMA weights). The labeller is the shipped classifier.
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch
from torch import Tensor

from igm_cli.data.images import to_unit_range
from igm_cli.data.stacked import digits_split
from igm_cli.metrics.digits import load_digit_classifier, to_8px

BANDS = ((0.0, 2.0), (2.0, 3.0), (3.0, float("inf")))  # L2 distance to the nearest training digit


def to_unit(digits: Tensor) -> Tensor:
    """uint8 digits [N, 1, 8, 8] -> [N, 64] in [-1, 1]."""
    return to_unit_range(digits).reshape(len(digits), -1)


@torch.no_grad()
def channel_probabilities(classifier, images: Tensor) -> Tensor:
    """Stacked images [N, 3, s, s] -> each channel's class probabilities [N, 3, 10]."""
    x = to_8px(images).reshape(-1, 1, 8, 8)
    return classifier(x).softmax(-1).reshape(len(images), 3, 10)


def confident_channels(probs: Tensor, confidence: float) -> Tensor:
    """[N, 3] bool: the channel's top class has probability >= confidence."""
    return probs.max(-1).values >= confidence


def between_two(probs: Tensor, confidence: float, top: int = 5) -> tuple[float, list]:
    """Among channels that miss the bar: the fraction whose two likeliest digits hold more than
    ``confidence`` of the probability, and the most common (first, second) digit pairs."""
    flat = probs.reshape(-1, 10)
    missed = flat[flat.max(-1).values < confidence]
    if not len(missed):
        return 0.0, []
    values, labels = missed.topk(2, dim=-1)
    two = (values.sum(-1) > confidence).double().mean().item()
    pairs = Counter(map(tuple, labels.tolist())).most_common(top)
    return two, pairs


def nearest_distance(points: Tensor, train: Tensor, leave_one_out: bool = False) -> Tensor:
    """L2 distance [N] from each flattened digit to its nearest training digit."""
    d = torch.cdist(points, train)
    if leave_one_out:
        d.fill_diagonal_(float("inf"))
    return d.min(1).values


def by_distance(distance: Tensor, confident: Tensor) -> list[tuple[str, float, float]]:
    """(band, fraction of digits in it, their confident fraction) for each distance band."""
    rows = []
    for low, high in BANDS:
        inside = (distance >= low) & (distance < high)
        share = inside.double().mean().item()
        rate = confident[inside].double().mean().item() if inside.any() else float("nan")
        rows.append((f"[{low:g}, {high:g})", share, rate))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run folder of dataset=stacked_digits")
    parser.add_argument("--n", type=int, default=26000, help="samples (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default %(default)s)")
    parser.add_argument("--confidence", type=float, default=0.9)
    parser.add_argument("--psi", default="1,0.9,0.8,0.7,0.5",
                        help="noise scales for the truncation rows (default %(default)s)")
    args = parser.parse_args(argv)

    from igm_cli.sampling import load_generator

    generator, z_dim = load_generator(args.run)[:2]
    classifier = load_digit_classifier()[0].eval()
    train, _, heldout, _ = digits_split(8)
    train, heldout = to_unit(train), to_unit(heldout)
    z = torch.randn(args.n, z_dim, generator=torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        fake = generator(z)
    probs = channel_probabilities(classifier, fake)
    confident = confident_channels(probs, args.confidence)
    print(f"confident (all three channels): {confident.all(1).double().mean():.3f}")
    rates = " / ".join(f"{r:.3f}" for r in confident.double().mean(0).tolist())
    print(f"per channel: {rates}")
    real = {}  # each real digit as one channel: confidently labelled or not
    for name, digits in (("training digits", train), ("held-out digits", heldout)):
        stacks = digits.reshape(-1, 1, 8, 8).repeat(1, 3, 1, 1)
        real[name] = confident_channels(channel_probabilities(classifier, stacks),
                                        args.confidence)[:, 0]
        print(f"  {name}: {real[name].double().mean():.3f}")
    two, pairs = between_two(probs, args.confidence)
    print(f"channels below the bar with > {args.confidence} on two digits: {two:.3f}; "
          f"most common pairs: {', '.join(f'{a}/{b} ({n})' for (a, b), n in pairs)}")

    channels = fake.reshape(-1, 64)[: 3 * min(args.n, 3000)]  # the first 3000 images' channels
    fake_distance = nearest_distance(channels, train)
    real_distance = nearest_distance(heldout, train)
    train_distance = nearest_distance(train, train, leave_one_out=True)
    print("median L2 distance to the nearest training digit: "
          f"generated {fake_distance.median():.2f}, held-out {real_distance.median():.2f}, "
          f"training (leave one out) {train_distance.median():.2f}")
    made = confident.reshape(-1)[: len(channels)]
    for (band, share, rate), (_, held_share, held_rate) in zip(
            by_distance(fake_distance, made), by_distance(real_distance, real["held-out digits"])):
        print(f"  distance {band}: generated {share:.3f} of digits, {rate:.3f} confident; "
              f"held-out {held_share:.3f}, {held_rate:.3f}")

    for psi in (float(p) for p in args.psi.split(",")):
        with torch.no_grad():
            scaled = channel_probabilities(classifier, generator(psi * z))
        rate = confident_channels(scaled, args.confidence).all(1).double().mean().item()
        print(f"noise x {psi:g}: confident {rate:.3f}")


if __name__ == "__main__":
    main()
