"""A plain loop of the pytorch/examples DCGAN recipe (Radford et al. 2016), the reference that
`scripts/bench_toy.py` times `igm train model=gan arch=dcgan dataset=fake ...` against.

The recipe as that example runs it: 64x64 images, batch 64, nz 100, ngf = ndf = 64; a generator
of transposed convolutions with batch norm and ReLU (tanh out), a discriminator of strided
convolutions with batch norm and LeakyReLU(0.2) (sigmoid out); weights N(0, 0.02), batch-norm
scales N(1, 0.02); BCE with real label 1 and fake label 0; Adam 2e-4, β (0.5, 0.999) for both;
cudnn.benchmark on. Per step: the discriminator's loss on a real batch and on G(z) (detached),
one Adam step; then the generator's loss BCE(D(G(z)), 1) on the same fake batch, one Adam step;
the losses printed with .item() every step (as the example prints them). Data: torchvision's
FakeData through a DataLoader (2 workers, ToTensor per image), or `--data tensor`: random images
held on the device, batches indexed there. Image grids and checkpoints are not written.

    python scripts/reference/dcgan_example.py --steps 20 [--cuda] [--data tensor]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn


def generator(nz: int = 100, ngf: int = 64, nc: int = 3) -> nn.Sequential:
    def up(c_in, c_out):  # 2x upsampling: stride-2 transposed conv, batch norm, ReLU
        return [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out),
                nn.ReLU(True)]

    return nn.Sequential(  # z [B, nz, 1, 1] -> 4 -> 8 -> 16 -> 32 -> 64 px
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8),
        nn.ReLU(True),
        *up(ngf * 8, ngf * 4), *up(ngf * 4, ngf * 2), *up(ngf * 2, ngf),
        nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())


def discriminator(ndf: int = 64, nc: int = 3) -> nn.Sequential:
    def down(c_in, c_out):  # 2x downsampling: stride-2 conv, batch norm, LeakyReLU
        return [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.2, inplace=True)]

    return nn.Sequential(  # 64 -> 32 -> 16 -> 8 -> 4 px -> a probability
        nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        *down(ndf, ndf * 2), *down(ndf * 2, ndf * 4), *down(ndf * 4, ndf * 8),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid(), nn.Flatten(0))


def dcgan_init(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def batches(kind: str, batch: int, size: int, device: torch.device, workers: int):
    """An endless stream of [batch, 3, size, size] real images on ``device``."""
    if kind == "tensor":
        images = torch.rand(1000, 3, size, size, device=device) * 2 - 1
        while True:
            yield images[torch.randint(0, len(images), (batch,), device=device)]
    from torchvision import datasets, transforms

    data = datasets.FakeData(image_size=(3, size, size), transform=transforms.ToTensor())
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True,
                                         num_workers=workers)
    while True:  # epochs, as the example's outer loop
        for images, _ in loader:
            yield images.to(device)


def train(steps: int, device: str = "cpu", data: str = "fakedata", batch: int = 64,
          size: int = 64, nz: int = 100, workers: int = 2, print_every: int = 1,
          seed: int = 0) -> dict:
    """Train for ``steps`` iterations; returns the last losses (floats)."""
    torch.manual_seed(seed)
    device = torch.device(device)
    torch.backends.cudnn.benchmark = True
    net_g, net_d = generator(nz).to(device), discriminator().to(device)
    net_g.apply(dcgan_init)
    net_d.apply(dcgan_init)
    bce = nn.BCELoss()
    opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real_batches = batches(data, batch, size, device, workers)

    for step in range(steps):
        real = next(real_batches)
        b = real.shape[0]
        real_label = torch.ones(b, device=device)
        fake_label = torch.zeros(b, device=device)

        # Discriminator: maximise log D(x) + log(1 - D(G(z))).
        net_d.zero_grad()
        loss_d_real = bce(net_d(real), real_label)
        loss_d_real.backward()
        fake = net_g(torch.randn(b, nz, 1, 1, device=device))
        loss_d_fake = bce(net_d(fake.detach()), fake_label)
        loss_d_fake.backward()
        opt_d.step()

        # Generator: maximise log D(G(z)), on the same fake batch.
        net_g.zero_grad()
        loss_g = bce(net_d(fake), real_label)
        loss_g.backward()
        opt_g.step()

        if print_every and step % print_every == 0:
            print(f"[{step}/{steps}] loss_d {(loss_d_real + loss_d_fake).item():.4f} "
                  f"loss_g {loss_g.item():.4f}")
    return {"critic": (loss_d_real + loss_d_fake).item(), "generator": loss_g.item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cuda", action="store_true", help="train on the GPU")
    parser.add_argument("--data", choices=["fakedata", "tensor"], default="fakedata")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (fakedata)")
    parser.add_argument("--print-every", type=int, default=1, help="0: no loss lines")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    losses = train(args.steps, "cuda" if args.cuda else "cpu", args.data, args.batch_size,
                   args.image_size, workers=args.workers, print_every=args.print_every,
                   seed=args.seed)
    seconds = time.perf_counter() - started
    print(f"{args.steps} steps in {seconds:.2f} s ({args.steps / seconds:.2f} steps/s); "
          f"last loss D {losses['critic']:.4f} G {losses['generator']:.4f}")


if __name__ == "__main__":
    main()
