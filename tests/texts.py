"""The parity corpus: varied texts on which our tokenizer and model must equal the reference.

Used by the real-checkpoint parity tests (token ids against the Hugging Face tokenizer, embeddings
against sentence-transformers). The long texts are real text read from the Python standard library
at import time (its module docstrings and source), so nothing is downloaded and nothing is made up.

- `PARITY_TEXTS`: every text below, in a fixed order.
- `LONG_TEXT_600`: about 600 tokens (crosses the 257-token local attention window).
- `LONG_TEXT_3000`: about 3,000 tokens (past the 2,048-token maximum length, so it is truncated).
"""

from __future__ import annotations

import argparse
import ast
import codecs
import importlib.util
import inspect
import textwrap
from pathlib import Path


def _zen_of_python() -> str:
    # `import this` prints; read the module's source instead and undo its rot13.
    source = Path(importlib.util.find_spec("this").origin).read_text(encoding="utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "s":
            return codecs.decode(node.value.value, "rot13")
    raise RuntimeError("could not find the Zen of Python in the 'this' module")


def _cut_at_line(text: str, n_chars: int) -> str:
    head = text[:n_chars]
    return head[: head.rfind("\n")] if "\n" in head else head


# Prose with an indented code example: ~600 tokens.
LONG_TEXT_600: str = inspect.getdoc(argparse)
# Python source with docstrings: ~3,000 tokens.
LONG_TEXT_3000: str = _cut_at_line(inspect.getsource(textwrap), 11_500)
ZEN_OF_PYTHON: str = _zen_of_python()
MEDIUM_DOCSTRING: str = inspect.getdoc(inspect.getsource)

SHORT_TEXTS: list[str] = [
    # Empty, single characters, punctuation.
    "",
    "a",
    "Z",
    ".",
    "?!",
    "...",
    "«»„“”‘’—–…",
    # Whitespace: spaces, runs, newlines, tabs, carriage returns, non-breaking and odd spaces.
    " ",
    "   ",
    "\n",
    "\n\n\n",
    "\t",
    "a\tb\t\tc\t\t\t\td",
    "  leading and trailing spaces  ",
    "Spaces    between     words",
    "line one\nline two\r\nline three\n\n\nline six",
    "mixed \t \n whitespace\u00a0non-breaking\u2003em\u3000ideographic",
    "class A:\n\tdef f(self):\n\t\treturn 1\n",
    # Plain English.
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "how do I reverse a list in python",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    # Numbers.
    "1234567890",
    "3.14159 2,718.28 1e-9 -42 +7 1/3 100% $19.99 €5 ¥1000",
    "Call 555-0100 on 2024-03-15 at 09:30, room 4B.",
    # Code and markup.
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "SELECT name, COUNT(*) FROM users WHERE age > 30 GROUP BY name;",
    '{"key": [1, 2, 3], "nested": {"ok": true, "none": null}}',
    "https://example.com/path?q=embedding&lang=en#top user@example.org",
    "<table><tr><td>cell</td></tr></table> <b>bold</b> <code>x = 1</code>",
    # Strings of special tokens inside text (the reference maps them to their ids).
    "<start_of_turn>user\nhello<end_of_turn>\n<start_of_turn>model",
    "text with <eos> and <bos> and <pad> and <unk> inside",
    "<unused7> <mask> [multimodal] <eos<bos>>",
    "a▁b ▁▁ c",
    # Symbols, emoji, unicode forms.
    "I love it 😍🔥👍🏽 👨‍👩‍👧‍👦 🇯🇵",
    "∑_{i=1}^{n} x_i² ≥ 0, ∀x ∈ ℝ; α → ∞",
    "café vs cafe\u0301 (composed and decomposed)",
    "ＦＵＬＬＷＩＤＴＨ　１２３！",
    "ﬁ ﬂ Ⅻ ½ ² ㎏ №",
    "zero\u200bwidth\u200djoiner\u200e\u200fmarks\ufeff",
    "rare 𠀀𠀁 and private \ue000 use",
    # Scripts.
    "机器学习是人工智能的一个分支。",
    "今天天氣很好，我們去公園散步吧。",
    "東京は日本の首都です。ひらがなとカタカナも使います。",
    "한국어는 한글로 씁니다. 오늘 날씨가 좋네요.",
    "اللغة العربية من أكثر اللغات انتشاراً في العالم.",
    "עברית נכתבת מימין לשמאל.",
    "हिन्दी भारत की एक प्रमुख भाषा है।",
    "আমি বাংলায় গান গাই।",
    "தமிழ் ஒரு பழமையான மொழி.",
    "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
    "Москва — столица России. Съешь же ещё этих мягких французских булок.",
    "Україна, Київ: ґанок, їжак, єнот.",
    "Η γλώσσα μου έδωσαν ελληνική.",
    "ქართული ენა ძალიან ლამაზია.",
    "Հայերենը հնդեվրոպական լեզու է։",
    "አማርኛ በኢትዮጵያ ይነገራል።",
    "Tiếng Việt có nhiều dấu thanh điệu.",
    "İstanbul'da ılık bir gün; Ğğ Şş Çç Öö Üü.",
    "Größenwahn und Straße — Äpfel, Öl, Übermut.",
    "L'été dernier, nous sommes allés à Montréal.",
    "¿Dónde está la biblioteca? ¡Aquí!",
    "Zażółć gęślą jaźń.",
    "زبان فارسی از راست به چپ نوشته می‌شود.",
    "Kiswahili ni lugha ya Afrika Mashariki.",
    # Mixed scripts.
    "Tokyo 東京 Москва Αθήνα القاهرة 서울 दिल्ली — mixed.",
    "def 函数(参数): return 参数 * 2  # 注释 комментарий",
]

PARITY_TEXTS: list[str] = [
    *SHORT_TEXTS,
    ZEN_OF_PYTHON,
    MEDIUM_DOCSTRING,
    LONG_TEXT_600,
    LONG_TEXT_3000,
]
