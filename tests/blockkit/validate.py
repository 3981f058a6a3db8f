"""Validates Slack message payloads with an independent Block Kit implementation.

Reads a JSON file holding a list of message bodies (as sent to chat.postMessage /
chat.update). For each: at most 50 blocks; every block, top-level and inside
attachments, must parse with slack_sdk's models (an unknown type parses to None)
and pass their validate_json() (lengths, counts, required fields); the parsed
block must serialize back to the same keys it was given (no field silently
dropped). Prints one line per problem and exits 1 if there is any.

Usage: python validate.py PAYLOADS.json
"""

import json
import sys

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.attachments import BlockAttachment
from slack_sdk.models.blocks import Block

MAX_BLOCKS = 50


def check_blocks(where, blocks, problems):
    if not isinstance(blocks, list):
        problems.append(f"{where}: blocks is not a list")
        return 0
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"{where}: {len(blocks)} blocks > {MAX_BLOCKS}")
    n = 0
    for i, raw in enumerate(blocks):
        parsed = Block.parse(raw)
        if parsed is None:
            problems.append(f"{where}.blocks[{i}]: unknown block {raw.get('type')!r}")
            continue
        try:
            parsed.validate_json()
        except SlackObjectFormationError as e:
            problems.append(f"{where}.blocks[{i}] ({raw.get('type')}): {e}")
            continue
        back = parsed.to_dict()
        missing = set(raw) - set(back)
        if missing:
            problems.append(f"{where}.blocks[{i}]: fields dropped by the model: {sorted(missing)}")
        n += 1
    return n


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        payloads = json.load(f)
    problems = []
    blocks = 0
    for p, body in enumerate(payloads):
        where = f"payload[{p}]"
        blocks += check_blocks(where, body.get("blocks", []), problems)
        for a, att in enumerate(body.get("attachments", []) or []):
            blocks += check_blocks(f"{where}.attachments[{a}]", att.get("blocks", []), problems)
            try:
                BlockAttachment(blocks=att.get("blocks", []), color=att.get("color"),
                                fallback=att.get("fallback")).validate_json()
            except SlackObjectFormationError as e:
                problems.append(f"{where}.attachments[{a}]: {e}")
    for line in problems:
        print(line)
    print(f"blockkit: {len(payloads)} payloads, {blocks} blocks valid, {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
