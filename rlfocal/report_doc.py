"""The report as a list of blocks, rendered to Markdown (PNG links) and to one self-contained HTML page.

Kept apart from ``rlfocal.report`` so that the numbers and their layout can be read separately.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path


class Doc:
    """A report as a list of blocks, rendered to Markdown (linked PNGs) and to self-contained HTML."""

    def __init__(self) -> None:
        self.blocks: list[tuple] = []

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def items(self, items: list[str]) -> None:
        self.blocks.append(("ul", items))

    def code(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", header, rows))

    def image(self, path: Path, alt: str) -> None:
        self.blocks.append(("img", path, alt))

    def markdown(self) -> str:
        out = []
        for kind, *args in self.blocks:
            if kind == "h":
                out.append("#" * args[0] + " " + args[1])
            elif kind == "p":
                out.append(args[0])
            elif kind == "ul":
                out.append("\n".join(f"- {item}" for item in args[0]))
            elif kind == "pre":
                out.append(f"```\n{args[0]}\n```")
            elif kind == "table":
                header, rows = args
                cells = [header, ["---"] * len(header), *rows]
                out.append("\n".join("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in cells))
            elif kind == "img":
                out.append(f"![{args[1]}]({args[0].name})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        def inline(text: str) -> str:  # `code` spans, the only markup the paragraphs use
            return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))

        body = []
        for kind, *args in self.blocks:
            if kind == "h":
                body.append(f"<h{args[0]}>{inline(args[1])}</h{args[0]}>")
            elif kind == "p":
                body.append(f"<p>{inline(args[0])}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in args[0]) + "</ul>")
            elif kind == "pre":
                body.append(f"<pre>{html.escape(args[0])}</pre>")
            elif kind == "table":
                header, rows = args
                head = "".join(f"<th>{inline(c)}</th>" for c in header)
                trs = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            elif kind == "img":
                data = base64.b64encode(args[0].read_bytes()).decode("ascii")
                body.append(f'<img alt="{html.escape(args[1])}" src="data:image/png;base64,{data}">')
        style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
                 "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}"
                 "img{max-width:100%}pre{background:#f4f4f4;padding:.5em;overflow-x:auto}")  # fmt: skip
        return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
                f"<style>{style}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")  # fmt: skip
