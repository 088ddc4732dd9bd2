"""Writes export/src/tokenizer/emoji_en.tsv: the emoji table min-dalle's tokenizer uses.

min-dalle's `TextTokenizer` starts with `emoji.demojize(text, delimiters=['', ''])`, which
replaces each emoji (longest match) with its English name without the colons. The exporter
writes that replacement into the bundle's `tokenizer.json` as normalizer steps, from this table.

Each line: the emoji's code points as space-separated hex, a tab, the name (`en` without the
surrounding colons). Sorted by code points. Regenerate with the `emoji` version min-dalle runs:

    /work/venv/bin/python tools/emoji_table.py
"""

import os
from importlib import metadata

import emoji

out = os.path.join(os.path.dirname(__file__), "..", "export", "src", "tokenizer", "emoji_en.tsv")
rows = []
for e, data in emoji.EMOJI_DATA.items():
    name = data["en"]
    assert name.startswith(":") and name.endswith(":"), name
    assert "\t" not in name and "\n" not in name
    rows.append((" ".join(f"{ord(c):x}" for c in e), name[1:-1]))
rows.sort()
with open(out, "w", encoding="utf-8") as f:
    f.write(f"# emoji {metadata.version('emoji')} EMOJI_DATA, English names (tools/emoji_table.py)\n")
    for cps, name in rows:
        f.write(f"{cps}\t{name}\n")
print(len(rows), "emoji ->", out)
