"""Shared by the corpus generators: reading captured envelopes and slimming
events to the fields that matter, so that the committed corpus stays small.

`slim` drops only what no grouping rule reads (ours, Bugsink's or the seed's):
installed-module lists, breadcrumbs, the SDK's integration/package lists,
debug images, the source lines around each frame (`pre_context`/
`post_context`; `context_line` stays), frame variables, and native frames'
`instruction_addr`/`package` (the binary's path).
"""

import json


def slim(event):
    for key in ("modules", "breadcrumbs", "debug_meta", "spans", "measurements"):
        event.pop(key, None)
    extra = event.get("extra")
    if isinstance(extra, dict):
        extra.pop("sys.argv", None)
    sdk = event.get("sdk")
    if isinstance(sdk, dict):
        for key in ("integrations", "packages"):
            sdk.pop(key, None)
    for frame in frames(event):
        for key in ("pre_context", "post_context", "vars", "instruction_addr", "package"):
            frame.pop(key, None)
    return event


def frames(event):
    stacks = []
    for e in (event.get("exception") or {}).get("values") or []:
        stacks.append(e.get("stacktrace"))
    for t in (event.get("threads") or {}).get("values") or []:
        stacks.append(t.get("stacktrace"))
    stacks.append(event.get("stacktrace"))
    for s in stacks:
        for f in (s or {}).get("frames") or []:
            yield f


def render(source, shift):
    """A source template as deploy number `shift` has it: each `{pad:N}`
    line becomes a number of blank lines that grows with the deploy, so the
    raising lines move between deploys as they do when code changes above
    them (the node generator does the same in JavaScript)."""
    out = []
    for line in source.splitlines():
        if line.startswith("{pad:"):
            n = int(line[5:-1])
            out.extend([""] * ((shift * n) % 5 + (1 if shift else 0)))
        else:
            out.append(line)
    return "\n".join(out) + "\n"
