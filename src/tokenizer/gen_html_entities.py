"""Writes src/tokenizer/html_entities.rs from Python's html module and ftfy's rule."""
import html, html.entities, sys
from html import _invalid_charrefs, _invalid_codepoints

def lit(s):
    return '"' + ''.join(c if (c.isalnum() and ord(c) < 128) or c in ' ;' else '\\u{%x}' % ord(c) for c in s) + '"'

h5 = html.entities.html5
upper = {}
for name, char in h5.items():
    if name.endswith(';') and name == name.lower():
        nu = name.upper()
        if html.unescape('&' + nu) == '&' + nu:
            upper[nu] = char.upper()
out = []
out.append('//! HTML entity tables, generated from Python %s\'s `html` module (HTML5 named references,\n' % sys.version.split()[0])
out.append('//! invalid numeric references) and ftfy 6.3\'s upper-case entity rule. Do not edit by hand.\n')
out.append('//!\n//! Regenerate with `python3 src/tokenizer/gen_html_entities.py > src/tokenizer/html_entities.rs`.\n\n')
out.append('/// `html.entities.html5`: entity names (without `&`, with `;` where the name has one) and\n/// their replacement text, sorted by name (byte order) for binary search.\n')
items = sorted(h5.items(), key=lambda kv: kv[0].encode())
out.append('pub(super) static HTML5: [(&str, &str); %d] = [\n' % len(items))
for k, v in items:
    out.append('    (%s, %s),\n' % (lit(k), lit(v)))
out.append('];\n\n')
items = sorted(upper.items(), key=lambda kv: kv[0].encode())
out.append('/// ftfy\'s extra entities: upper-cased names (with `;`) of lower-case HTML5 names that\n/// `html.unescape` leaves alone, mapped to the upper-cased replacement. Sorted by name.\n')
out.append('pub(super) static FTFY_UPPER: [(&str, &str); %d] = [\n' % len(items))
for k, v in items:
    out.append('    (%s, %s),\n' % (lit(k), lit(v)))
out.append('];\n\n')
items = sorted(_invalid_charrefs.items())
out.append('/// `html._invalid_charrefs`: numeric references replaced by another character.\n')
out.append('pub(super) static INVALID_CHARREFS: [(u32, char); %d] = [\n' % len(items))
for k, v in items:
    out.append('    (0x%x, \'\\u{%x}\'),\n' % (k, ord(v)))
out.append('];\n\n')
items = sorted(_invalid_codepoints)
out.append('/// `html._invalid_codepoints`: numeric references that decode to nothing.\n')
out.append('pub(super) static INVALID_CODEPOINTS: [u32; %d] = [\n' % len(items))
for i in range(0, len(items), 8):
    out.append('    ' + ' '.join('0x%x,' % k for k in items[i:i+8]) + '\n')
out.append('];\n')
sys.stdout.write(''.join(out))
