"""``lesionseg recipes``: the packaged recipes, with what each trains."""

from __future__ import annotations

import argparse

NAME = "recipes"
ORDER = 25
HELP = "list the packaged recipes: description, networks, channels"
DESCRIPTION = """List the recipes shipped with lesionseg (their names go to `lesionseg train` and
`lesionseg describe`): each one's description, the networks it trains and the channels it
reads ("all" when it reads every channel of the data set).

example:
  lesionseg recipes"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``lesionseg recipes`` takes no options."""


def recipe_rows() -> list[dict[str, str]]:
    """One row per packaged recipe: name, networks, channels, description."""
    from lesionseg.training.recipe import available_recipes, is_train, load_recipe

    rows = []
    for name in available_recipes():
        data = load_recipe(name).data
        networks = []
        for stage in data["stages"]:
            if is_train(stage):
                entry = f"{stage['network']}={stage['model']['name']}"
                if entry not in networks:
                    networks.append(entry)
        expects = data.get("expects") or {}
        channels = ", ".join(data.get("channels") or ["all"])
        if not data.get("channels") and expects.get("channels"):
            channels += f" (written for {expects['channels']})"
        rows.append(
            {
                "name": name,
                "networks": ", ".join(networks),
                "channels": channels,
                "description": " ".join(str(data.get("description", "")).split()),
            }
        )
    return rows


def run(args: argparse.Namespace) -> int:
    """Print the table."""
    rows = recipe_rows()
    width = max(len(r["name"]) for r in rows)
    for row in rows:
        print(f"{row['name']:<{width}}  {row['networks']}; channels: {row['channels']}")
        print(f"{'':<{width}}  {row['description']}")
    return 0
