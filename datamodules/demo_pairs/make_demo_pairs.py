"""Regenerate the bundled demo pairs (needs scikit-image, which ships the photos; not a dependency).

Each pair is two crops of one photo, resized differently, so the ground-truth target keypoints
follow exactly from the hand-set source keypoints. Run from this folder: ``python make_demo_pairs.py``.
"""

import json

import numpy as np
from PIL import Image
from skimage import data

# photo, source box, source size, target box, target size (boxes x1, y1, x2, y2 in photo pixels),
# hand-set keypoints in photo pixels, category
PAIRS = [
    (
        "chelsea",
        (0, 0, 451, 300),
        (300, 200),
        (60, 20, 420, 290),
        (320, 240),
        [(172, 112), (318, 135), (262, 242), (255, 40), (100, 200)],
        "cat",
    ),
    (
        "astronaut",
        (0, 0, 512, 512),
        (256, 256),
        (60, 40, 460, 480),
        (300, 330),
        [(205, 102), (247, 103), (225, 127), (225, 143), (170, 385), (303, 356)],
        "person",
    ),
    (
        "astronaut",
        (130, 40, 330, 220),
        (300, 270),
        (160, 60, 300, 200),
        (224, 224),
        [(205, 102), (247, 103), (225, 127), (225, 143), (225, 170)],
        "face",
    ),
]


def to_crop(points, box, size):
    sx, sy = size[0] / (box[2] - box[0]), size[1] / (box[3] - box[1])
    return [[round((x - box[0]) * sx, 2), round((y - box[1]) * sy, 2)] for x, y in points]


def main():
    pairs = []
    for i, (photo, src_box, src_size, trg_box, trg_size, points, category) in enumerate(PAIRS):
        image = Image.fromarray(np.asarray(getattr(data, photo)()))
        names = (f"{i}_{photo}_source.jpg", f"{i}_{photo}_target.jpg")
        image.crop(src_box).resize(src_size, Image.BICUBIC).save(names[0], quality=90)
        image.crop(trg_box).resize(trg_size, Image.BICUBIC).save(names[1], quality=90)
        pairs.append(
            {
                "id": f"{i}_{photo}",
                "source": names[0],
                "target": names[1],
                "category": category,
                "source_keypoints": to_crop(points, src_box, src_size),
                "target_keypoints": to_crop(points, trg_box, trg_size),
            }
        )
    with open("pairs.json", "w") as f:
        json.dump({"pairs": pairs}, f, indent=1)


if __name__ == "__main__":
    main()
