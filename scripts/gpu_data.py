"""Pack the training data small enough to travel to a lent GPU machine, and unpack it there.

    python scripts/gpu_data.py pack --data ../shared/data/ferplus --out .gpu/data
    python scripts/gpu_data.py unpack --packed .gpu/data --out /tmp/ferplus

The faces of each split become one lossless WebP mosaic (48x48 tiles, 200 to a row: about 30 %
smaller than the same pixels in a compressed .npz), the other fields a compressed .npz beside it.
Unpacking writes `train.npz` and `val.npz` with the same fields and pixels as the originals.
Only the faces the trainer learns from are packed (those most annotators could read).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from emotion.labels import FACE_SIZE
from emotion.training.train import learnable

SPLITS = ("train", "val")
TILES_PER_ROW = 200  # a 28,558-face split becomes a 9600 x 6864 image, inside WebP's 16383 limit


def pack(data_dir: Path, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        with np.load(data_dir / f"{split}.npz") as archive:
            fields = {name: archive[name] for name in archive.files}
        keep = learnable(fields)
        fields = {name: value[keep] if len(value) == len(keep) else value for name, value in fields.items()}
        images = fields.pop("images")  # (N, 48, 48)
        rows = -(-len(images) // TILES_PER_ROW)
        tiles = np.zeros((rows * TILES_PER_ROW, FACE_SIZE, FACE_SIZE), np.uint8)
        tiles[: len(images)] = images
        mosaic = tiles.reshape(rows, TILES_PER_ROW, FACE_SIZE, FACE_SIZE).transpose(0, 2, 1, 3)
        mosaic = mosaic.reshape(rows * FACE_SIZE, TILES_PER_ROW * FACE_SIZE)
        Image.fromarray(mosaic).save(out_dir / f"{split}.webp", lossless=True, quality=100)
        np.savez_compressed(out_dir / f"{split}_fields.npz", count=len(images), **fields)
        print(f"{split}: {len(images)} faces, {(out_dir / f'{split}.webp').stat().st_size / 1e6:.1f} MB")


def unpack(packed_dir: Path, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        with np.load(packed_dir / f"{split}_fields.npz") as archive:
            fields = {name: archive[name] for name in archive.files}
        count = int(fields.pop("count"))
        mosaic = np.asarray(Image.open(packed_dir / f"{split}.webp").convert("L"))
        rows = mosaic.shape[0] // FACE_SIZE
        tiles = mosaic.reshape(rows, FACE_SIZE, TILES_PER_ROW, FACE_SIZE).transpose(0, 2, 1, 3)
        images = tiles.reshape(-1, FACE_SIZE, FACE_SIZE)[:count]
        np.savez(out_dir / f"{split}.npz", images=images, **fields)
        print(f"{split}: {count} faces")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pack_command = commands.add_parser("pack", help="a FER+ data folder -> a small folder to carry")
    pack_command.add_argument("--data", type=Path, required=True)
    pack_command.add_argument("--out", type=Path, required=True)
    unpack_command = commands.add_parser("unpack", help="the packed folder -> train.npz and val.npz")
    unpack_command.add_argument("--packed", type=Path, required=True)
    unpack_command.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.data, args.out)
    else:
        unpack(args.packed, args.out)


if __name__ == "__main__":
    main()
