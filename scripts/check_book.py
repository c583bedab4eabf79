"""Open every page of a built book in headless Chromium with no network.

Fails on broken images, missing assets, requests that leave the machine,
console errors or unrendered math. Screenshots of each page are saved (the first
screen; ``--full-page``: the whole page), and with ``--figures`` one of every figure of
the page's outputs (``<page>__fig<N>.png``, in page order), as a reader sees it.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import sys
import threading
from pathlib import Path

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("html", help="folder with index.html")
    ap.add_argument("--screenshots", default="build/screenshots")
    ap.add_argument("--full-page", action="store_true", help="screenshot whole pages")
    ap.add_argument("--figures", action="store_true", help="also screenshot every output figure")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args()
    if not Path(args.chromium).exists():
        print(
            f"Chromium not found at {args.chromium}: install it (Debian/Ubuntu: "
            "'apt-get install chromium') or pass --chromium PATH",
            file=sys.stderr,
        )
        return 1
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("playwright is missing: pip install 'sci2cl[book]'", file=sys.stderr)
        return 1
    root = Path(args.html).resolve()
    if not (root / "index.html").exists():
        print(f"{root}/index.html not found: build the book first", file=sys.stderr)
        return 1
    shots = Path(args.screenshots)
    shots.mkdir(parents=True, exist_ok=True)
    pages = ["index.html"] + sorted(
        str(p.relative_to(root))
        for p in root.rglob("*.html")
        if p.name not in {"index.html", "genindex.html", "search.html"}
        and "_static" not in p.parts
        and "mathjax" not in p.parts
    )

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    handler = functools.partial(Quiet, directory=str(root))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}/"
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        # no network: anything not served by our local server is blocked and reported
        ctx.route(
            "**/*",
            lambda route: (
                route.continue_()
                if route.request.url.startswith(base) or route.request.url.startswith("data:")
                else route.abort()
            ),
        )
        for rel in pages:
            page = ctx.new_page()
            issues: list[str] = []
            page.on(
                "console",
                lambda m, i=issues: (
                    i.append(f"console {m.type}: {m.text}") if m.type == "error" else None
                ),
            )
            page.on("pageerror", lambda e, i=issues: i.append(f"page error: {e}"))
            page.on("requestfailed", lambda r, i=issues: i.append(f"request failed: {r.url}"))
            page.on(
                "response",
                lambda r, i=issues: (
                    i.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None
                ),
            )
            page.goto(base + rel, wait_until="networkidle")
            page.wait_for_timeout(300)
            broken = page.eval_on_selector_all(
                "img",
                "imgs => imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)",
            )
            issues += [f"broken image: {s}" for s in broken]
            n_img = page.eval_on_selector_all("img", "imgs => imgs.length")
            has_math = page.eval_on_selector_all("div.math, span.math", "e => e.length") > 0
            if has_math and page.eval_on_selector_all("mjx-container", "e => e.length") == 0:
                issues.append("math not rendered by MathJax")
            name = rel.replace("/", "__").replace(".html", ".png")
            page.screenshot(path=str(shots / name), full_page=args.full_page)
            if args.figures:
                figs = page.query_selector_all(".cell_output img, figure img")
                for k, fig in enumerate(figs):
                    fig.scroll_into_view_if_needed()
                    fig.screenshot(path=str(shots / name.replace(".png", f"__fig{k}.png")))
            status = "OK " if not issues else "BAD"
            print(f"{status} {rel}: {n_img} images, math={'yes' if has_math else 'no'}")
            for i in issues:
                print(f"    {i}")
            problems += [f"{rel}: {i}" for i in issues]
            page.close()
        browser.close()
    srv.shutdown()
    print(f"{len(pages)} pages checked, {len(problems)} problems; screenshots in {shots}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
