"""Image data sets: pixels in [-1, 1], shape (C, H, W) with H = W = ``resolution`` (32 or 64).

Small sets (digits, MNIST, Fashion-MNIST, CIFAR-10, FakeData) are decoded once into one uint8
tensor on the training device and each step indexes a random batch there (``on_device``): no
DataLoader, no host-to-device copy, and a resumed run continues the same stream. Large sets
(CelebA, your own folder) stream through a DataLoader with workers, pinned memory and
persistent workers. Every data set keeps a held-out split (``heldout``) for evaluation.

Downloads use torchvision's own code; where one fails (offline, blocked) the error is one line
naming the data set, the folder, and how to place the files by hand.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from igm_cli.errors import IgmError
from igm_cli.registry import DATASETS

RESOLUTIONS = (32, 64)
ON_DEVICE = ("auto", "true", "false")
IMAGE_SETS = ("digits", "fake", "mnist", "fashion_mnist", "cifar10", "celeba", "image_folder",
              "stacked_digits")
RESOLUTIONS_OF = {"stacked_digits": (8, 32)}  # sets whose sizes are not RESOLUTIONS


CHANNELS = {"digits": 1, "mnist": 1, "fashion_mnist": 1, "cifar10": 3, "celeba": 3,
            "stacked_digits": 3}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
VERIFY_LIMIT = 5000  # image_folder: files opened before the run (all of a smaller folder)


def check_image_config(cfg) -> tuple[int, int, int]:
    """Key checks of an image data set without loading it (one-line IgmErrors); returns the
    shape (C, H, W) its images will have. Your own folder's files are opened and verified."""
    import inspect

    params = {k: v for k, v in dict(cfg).items() if k != "name"}
    builder = DATASETS.get(cfg.name)
    accepted = set(inspect.signature(builder).parameters) - {"device"}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise IgmError(f"dataset '{cfg.name}' has no key {unknown[0]}; its keys: "
                       f"{', '.join(sorted(accepted))}")
    resolution = check_resolution(params.get("resolution", 32),
                                  RESOLUTIONS_OF.get(cfg.name, RESOLUTIONS))
    _want_tensor(params.get("on_device", "auto"))
    channels = CHANNELS.get(cfg.name, params.get("channels", 3))
    if channels not in (1, 3):
        raise IgmError(f"dataset.channels must be 1 or 3, got {channels!r}")
    if cfg.name in TORCHVISION:  # opening finds (or downloads) the files: fail before any run
        cls_name, by_hand = TORCHVISION[cfg.name]
        _open_torchvision(cfg.name, cls_name, params.get("root"), params.get("download", True),
                          by_hand, train=True)
    if cfg.name == "image_folder":
        verify_folder(image_files(params.get("path")))
    return channels, resolution, resolution


def image_files(path) -> list[Path]:
    """The image files under ``path`` (recursively), sorted; at least 2, else IgmError."""
    if not path:
        raise IgmError("dataset=image_folder needs dataset.path=FOLDER")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise IgmError(f"dataset.path '{path}' is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < 2:
        raise IgmError(f"dataset.path '{path}' holds {len(files)} image files "
                       f"({', '.join(sorted(IMAGE_SUFFIXES))}); need at least 2")
    return files


def verify_folder(files: list[Path]) -> None:
    """Open every file (the first VERIFY_LIMIT of a larger folder) and check it decodes."""
    from PIL import Image

    for file in files[:VERIFY_LIMIT]:
        try:
            with Image.open(file) as image:
                image.verify()
        except Exception as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise IgmError(f"dataset.path: '{file}' is not a readable image ({reason[:120]}); "
                           f"remove or replace it") from None


def default_root() -> str:
    """~/.cache/igm/data, or $XDG_CACHE_HOME/igm/data."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(cache) / "igm" / "data")


def to_unit_range(images: Tensor) -> Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def resize_uint8(images: Tensor, resolution: int) -> Tensor:
    """[N, C, h, w] uint8 -> [N, C, r, r] uint8 (bilinear with antialiasing; square input)."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    out = []
    for chunk in images.split(4096):
        x = F.interpolate(chunk.float(), size=(resolution, resolution), mode="bilinear",
                          antialias=True, align_corners=False)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def check_resolution(resolution, choices=RESOLUTIONS) -> int:
    if resolution not in choices:
        raise IgmError(f"dataset.resolution must be one of {', '.join(map(str, choices))}, "
                       f"got {resolution!r}")
    return int(resolution)


class ImageData:
    """Base of the image sets: ``shape`` (C, H, W), ``sample(n, generator)`` -> [n, C, H, W] in
    [-1, 1] on ``device``, ``heldout(n, generator)`` the same from the held-out split,
    ``labels`` where known."""

    has_modes = False
    modes_total = None  # known modes (stacked_digits: 1000 label triples)
    is_image = True

    def __init__(self, shape: tuple[int, int, int], device):
        self.shape = tuple(shape)
        self.dim = math.prod(shape)
        self.device = torch.device(device)


class TensorImages(ImageData):
    """All images as one uint8 tensor (train and held-out parts), on the training device
    (``on_device``: each step indexes a batch there) or in host memory (pinned when training on
    a GPU; each step's batch is copied over). The batch indices come from the same stream either
    way, so both give the same batches."""

    def __init__(self, train: Tensor, heldout: Tensor, device, train_labels=None,
                 heldout_labels=None, on_device: bool = True):
        super().__init__(tuple(train.shape[1:]), device)
        self.on_device = on_device
        store = self.device if on_device else torch.device("cpu")
        self.train, self.test = train.to(store), heldout.to(store)
        if store.type == "cpu" and self.device.type == "cuda":
            self.train, self.test = self.train.pin_memory(), self.test.pin_memory()
        self.train_labels = train_labels
        self.heldout_labels = heldout_labels

    def _to_device(self, images: Tensor) -> Tensor:
        return to_unit_range(images.to(self.device, non_blocking=True))

    def _draw(self, images: Tensor, n: int, generator: torch.Generator) -> Tensor:
        rows = torch.randint(len(images), (n,), generator=generator, device=generator.device)
        return self._to_device(images[rows.to(images.device)])

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self._draw(self.train, n, generator)

    def heldout(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """The first n held-out images (all of them when n is larger), in a fixed order."""
        return self._to_device(self.test[:n])

    def reference(self, n: int) -> Tensor:
        """The first n training images (all when fewer): the real side of FID/KID/IS."""
        return self._to_device(self.train[:n])


class LoaderImages(ImageData):
    """A torchvision-style data set streamed through a DataLoader (shuffled, endless)."""

    def __init__(self, train_set, heldout_set, shape, device, workers: int = 4):
        super().__init__(shape, device)
        self.train_set, self.heldout_set = train_set, heldout_set
        self.workers = workers
        self._iter = None
        self._loader_batch = None  # the batch size the current loader was made for

    def _loader(self, batch: int, generator: torch.Generator):
        from torch.utils.data import DataLoader

        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
        return DataLoader(self.train_set, batch_size=batch, shuffle=True, drop_last=True,
                          num_workers=self.workers, pin_memory=self.device.type == "cuda",
                          persistent_workers=self.workers > 0,
                          generator=torch.Generator().manual_seed(seed))

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        if self._iter is None or self._loader_batch != n:
            self._loader_batch = n
            self._iter = iter(self._loader(n, generator))
        try:
            images = next(self._iter)
        except StopIteration:  # a new epoch
            self._iter = iter(self._loader(n, generator))
            images = next(self._iter)
        images = images[0] if isinstance(images, (list, tuple)) else images
        return to_unit_range(images.to(self.device, non_blocking=True))

    def heldout(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self._first_n(self.heldout_set, n)

    def reference(self, n: int) -> Tensor:
        return self._first_n(self.train_set, n)

    def _first_n(self, split, n: int) -> Tensor:
        count = min(n, len(split))
        images = torch.stack([_first(split[i]) for i in range(count)])
        return to_unit_range(images.to(self.device))


def _first(item):
    return item[0] if isinstance(item, (list, tuple)) else item


# ---------------------------------------------------------------------------- data sets

def _want_tensor(on_device) -> bool:
    value = str(on_device).lower()
    if value not in ON_DEVICE:
        raise IgmError(f"dataset.on_device must be one of {', '.join(ON_DEVICE)}, "
                       f"got {on_device!r}")
    return value != "false"


def digits_split(resolution: int = 8, heldout: int = 297, name: str = "digits"
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's handwritten digits (values 0-16 on 8x8), scaled to uint8 0-255 (rounded)
    and upscaled to ``resolution`` (bilinear; 8 is the native size); a fixed permutation (seed
    0) keeps the last ``heldout`` aside. Returns (train images [N, 1, r, r] uint8, their
    labels, held-out images, their labels). ``name`` is the data set asking (for the error
    when scikit-learn is missing)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise IgmError(f"dataset={name} needs scikit-learn: pip install 'igm[digits]' "
                       "(or pip install scikit-learn)") from None
    data = load_digits()
    images = torch.as_tensor(data.images, dtype=torch.float32)[:, None] * (255.0 / 16.0)
    images = resize_uint8(images.round().to(torch.uint8), resolution)
    labels = torch.as_tensor(data.target)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    images, labels = images[order], labels[order]
    k = len(images) - heldout
    return images[:k], labels[:k], images[k:], labels[k:]


@DATASETS.register("digits", "scikit-learn's 8x8 digits upscaled (1797 images, ships offline)")
def digits(resolution: int = 32, heldout: int = 297, on_device="auto", device="cpu"):
    """scikit-learn's handwritten digits (``digits_split``), with their labels."""
    resolution = check_resolution(resolution)
    on_device = _want_tensor(on_device)
    train, train_labels, test, test_labels = digits_split(resolution, heldout)
    return TensorImages(train, test, device, train_labels, test_labels, on_device)


@DATASETS.register("fake", "torchvision FakeData: random images, for smoke tests and speed")
def fake(size: int = 1024, channels: int = 3, resolution: int = 32, heldout: int = 256,
         on_device="auto", device="cpu"):
    from torchvision.datasets import FakeData
    from torchvision.transforms.functional import pil_to_tensor

    resolution = check_resolution(resolution)
    on_device = _want_tensor(on_device)
    data = FakeData(size + heldout, image_size=(channels, resolution, resolution),
                    num_classes=10, random_offset=0)
    images = torch.stack([pil_to_tensor(data[i][0]) for i in range(len(data))])
    if images.shape[1] != channels:  # FakeData's PIL round trip may drop a grey channel
        images = images[:, :1].expand(-1, channels, -1, -1).contiguous()
    return TensorImages(images[:size], images[size:], device, on_device=on_device)


def _download_error(name: str, root: str, exc: Exception, by_hand: str) -> IgmError:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    reason = reason if len(reason) <= 160 else reason[:157] + "..."
    return IgmError(f"dataset={name}: could not load or download it into {root} ({reason}); "
                    f"{by_hand}, or pass dataset.root=FOLDER where it already is")


TORCHVISION = {  # name: (torchvision class, how to place the files by hand)
    "mnist": ("MNIST", "place train-images-idx3-ubyte.gz and the other three files of MNIST "
              "in ROOT/MNIST/raw"),
    "fashion_mnist": ("FashionMNIST", "place the four .gz files of Fashion-MNIST in "
                      "ROOT/FashionMNIST/raw"),
    "cifar10": ("CIFAR10", "unpack cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/"
                "cifar.html) into ROOT"),
}


def _open_torchvision(name: str, cls_name: str, root, download, by_hand: str, train: bool):
    import torchvision.datasets as tvd

    root = str(Path(root or default_root()).expanduser())
    try:
        return getattr(tvd, cls_name)(root, train=train, download=bool(download))
    except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError, ...
        raise _download_error(name, root, exc, by_hand) from None


def _torchvision_tensor(name: str, root, download, resolution, on_device, device):
    resolution = check_resolution(resolution)
    on_device = _want_tensor(on_device)
    cls_name, by_hand = TORCHVISION[name]
    train = _open_torchvision(name, cls_name, root, download, by_hand, train=True)
    test = _open_torchvision(name, cls_name, root, download, by_hand, train=False)

    def as_tensor(split) -> Tensor:
        data = torch.as_tensor(split.data)
        data = data[:, None] if data.ndim == 3 else data.permute(0, 3, 1, 2)  # [N, C, h, w]
        return resize_uint8(data.contiguous(), resolution)

    return TensorImages(as_tensor(train), as_tensor(test), device,
                        torch.as_tensor(train.targets), torch.as_tensor(test.targets), on_device)


@DATASETS.register("mnist", "MNIST digits (torchvision), resized to 32 or 64 px")
def mnist(root: str | None = None, download: bool = True, resolution: int = 32,
          on_device="auto", device="cpu"):
    return _torchvision_tensor("mnist", root, download, resolution, on_device, device)


@DATASETS.register("fashion_mnist", "Fashion-MNIST (torchvision), resized to 32 or 64 px")
def fashion_mnist(root: str | None = None, download: bool = True, resolution: int = 32,
                  on_device="auto", device="cpu"):
    return _torchvision_tensor("fashion_mnist", root, download, resolution, on_device, device)


@DATASETS.register("cifar10", "CIFAR-10 (torchvision), 32 px (64 px upsampled)")
def cifar10(root: str | None = None, download: bool = True, resolution: int = 32,
            on_device="auto", device="cpu"):
    return _torchvision_tensor("cifar10", root, download, resolution, on_device, device)


def _image_transform(resolution: int, crop: int | None = None):
    from torchvision import transforms

    steps = [transforms.CenterCrop(crop)] if crop else []
    steps += [transforms.Resize(resolution), transforms.CenterCrop(resolution),
              transforms.PILToTensor()]
    return transforms.Compose(steps)


def _loader_or_tensor(train_set, heldout_set, resolution, channels, on_device, device,
                      workers):
    if str(on_device).lower() == "true":
        def stack(split):
            return torch.stack([_first(split[i]) for i in range(len(split))])

        return TensorImages(stack(train_set), stack(heldout_set), device)  # on the device
    return LoaderImages(train_set, heldout_set, (channels, resolution, resolution), device,
                        workers=workers)


@DATASETS.register("celeba", "CelebA faces (torchvision), centre crop 140, 64 or 32 px")
def celeba(root: str | None = None, download: bool = True, resolution: int = 64,
           on_device="auto", workers: int = 4, device="cpu"):
    from torchvision.datasets import CelebA

    resolution = check_resolution(resolution)
    _want_tensor(on_device)
    root = str(Path(root or default_root()).expanduser())
    transform = _image_transform(resolution, crop=140)
    try:
        train = CelebA(root, split="train", transform=transform, download=bool(download))
        test = CelebA(root, split="test", transform=transform, download=bool(download))
    except Exception as exc:
        raise _download_error("celeba", root, exc, "place img_align_celeba/ and the list_*.txt "
                              "files of CelebA in ROOT/celeba") from None
    return _loader_or_tensor(train, test, resolution, 3, on_device, device, workers)


@DATASETS.register("image_folder", "your own images: every image file under dataset.path")
def image_folder(path: str | None = None, resolution: int = 64, channels: int = 3,
                 heldout: int = 500, on_device="auto", workers: int = 4, device="cpu"):
    """Images of any size under ``path`` (searched recursively; .png .jpg .jpeg .bmp .webp),
    resized and centre-cropped; the last ``heldout`` files (sorted by path) are held out."""
    from PIL import Image

    resolution = check_resolution(resolution)
    _want_tensor(on_device)
    files = image_files(path)
    if channels not in (1, 3):
        raise IgmError(f"dataset.channels must be 1 or 3, got {channels!r}")
    transform = _image_transform(resolution)
    mode = "L" if channels == 1 else "RGB"

    class Files(torch.utils.data.Dataset):
        def __init__(self, paths):
            self.paths = paths

        def __len__(self):
            return len(self.paths)

        def __getitem__(self, i):
            try:
                with Image.open(self.paths[i]) as image:
                    return transform(image.convert(mode))
            except OSError as exc:
                raise IgmError(f"dataset.path: '{self.paths[i]}' is not a readable image "
                               f"({' '.join(str(exc).split())[:120]})") from None

    heldout = min(heldout, len(files) // 2)
    train, test = Files(files[:-heldout] if heldout else files), Files(files[-heldout:] or files)
    small = len(files) * channels * resolution * resolution <= 2**30  # up to 1 GB of uint8
    on_device = "true" if str(on_device).lower() == "auto" and small else on_device
    return _loader_or_tensor(train, test, resolution, channels, on_device, device,
                             workers)
