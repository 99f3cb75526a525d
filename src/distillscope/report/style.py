"""The report's stylesheet, inlined in the page (a Python string, so no package data to ship).

System fonts only: the page must render offline and fetch nothing.
"""

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1a1a1a; background: #fff; margin: 0 auto; max-width: 1200px; padding: 1em 2em; }
h1 { margin: 0.2em 0; font-size: 1.6em; }
h2 { margin-top: 2em; border-bottom: 2px solid #ddd; padding-bottom: 0.2em; }
nav { margin: 1em 0; font-size: 0.9em; }
nav a { margin-right: 1em; color: #1f5fa0; text-decoration: none; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #e4e4e4; text-align: left; }
th { background: #f3f3f3; position: sticky; top: 0; }
tbody tr:nth-child(even) { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.meta th { background: none; font-weight: 600; width: 11em; }
.sw { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.4em;
      border-radius: 2px; vertical-align: baseline; }
.desc, .how { color: #444; max-width: 75em; }
.note { color: #777; font-style: italic; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
details { margin: 0.5em 0; }
summary { cursor: pointer; color: #555; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.tokens th { position: static; font-weight: normal; background: #f3f3f3; }
.tokens td:first-child { white-space: nowrap; width: 11em; }
.tok { padding: 0.05em 0.2em; border-radius: 3px; line-height: 1.9; }
.tok.lab { font-weight: 600; }
.miss { color: #b2182b; font-weight: 600; }
footer { margin-top: 3em; color: #888; font-size: 0.85em; }
"""
