"""Draws models/demo/sample.png: a 256x256 test picture (sky, sun, hills, a red square) used by the
demo command to exercise `dalle-ort encode`/`decode`. Run by hand; the PNG is committed.

    /path/to/venv/bin/python tools/make_sample_image.py   # needs Pillow
"""
from pathlib import Path

from PIL import Image, ImageDraw

img = Image.new("RGB", (256, 256), (135, 190, 235))
d = ImageDraw.Draw(img)
d.ellipse((170, 25, 225, 80), fill=(250, 210, 60))
d.ellipse((-60, 150, 180, 330), fill=(70, 150, 70))
d.ellipse((100, 170, 330, 340), fill=(50, 120, 55))
d.rectangle((40, 100, 100, 160), fill=(200, 40, 40))
out = Path(__file__).resolve().parent.parent / "models" / "demo" / "sample.png"
img.save(out, optimize=True)
print(out)
