"""One shared list of hostile inputs, pushed through every page, figure and library entry point."""

HOSTILE: list[str] = [
    "",
    "   \n\t  ",
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">click</a>',
    "<svg onload=alert(1)>",
    '"><iframe srcdoc="<script>alert(1)</script>">',
    "**bold** _it_ `code` # heading [link](http://example.com)",
    "$x^2$ and $$\\frac{a}{b}$$ \\(x\\)",
    "\u202eevil\u202c text with a right-to-left override",
    "zero\u200bwidth\u200djoiner\ufeff",
    "null\x00byte",
    "lone surrogate \ud800 here",
    "👩‍👩‍👧‍👦 🤷🏽‍♀️ 🏳️‍🌈 👍🏿",
    "مرحبا بالعالم وهذا نص من اليمين إلى اليسار",
    "漢字とかなの混ざった日本語の文",
    "e\u0301 combining marks a\u0308\u0304",
    "to be or not to [MASK] . </s> <extra_id_0> [CLS] [SEP] <|endoftext|>",
    "x" * 500,
    "word " * 10_000,
]
