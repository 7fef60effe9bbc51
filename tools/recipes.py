"""The recipes: list them, show one resolved (net configuration, contract, nets), or print one value.

    python -m tools.recipes                          # every recipe, one line each
    python -m tools.recipes acdc                     # acdc resolved, as JSON
    python -m tools.recipes cross_sunnybrook test_data.roi     # one value (for the Makefile)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from data_prep.errors import InputError
from tempregnet.recipes import load_recipe, recipe_names


def resolved(name: str) -> dict:
    """A recipe with its resolved net configuration, data contract(s) and generated nets."""
    recipe = load_recipe(name)
    out = recipe.to_dict()
    out["net_config"] = dataclasses.asdict(recipe.net_config())
    out["contract"] = recipe.contract().to_dict()
    if recipe.test_data:
        out["test_contract"] = recipe.contract("test_data").to_dict()
    out["prototxt"] = [f"prototxt/{recipe.name}/{v}_{phase}.prototxt" for v in recipe.variants
                       for phase in ("train", "test", "deploy", "solver")]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", nargs="?", help="recipe name or .toml file")
    p.add_argument("key", nargs="?", help="dotted key of one value, e.g. data.roi or net_config.crop")
    args = p.parse_args(argv)
    try:
        if not args.recipe:
            for name in recipe_names():
                print(f"{name:18s} {load_recipe(name).description}")
            return 0
        value = resolved(args.recipe)
        for part in (args.key.split(".") if args.key else []):
            if not isinstance(value, dict) or part not in value:
                raise InputError(args.recipe, f"no key {args.key!r}")
            value = value[part]
    except InputError as err:
        print(f"recipes: {err}", file=sys.stderr)
        return 1
    print(value if args.key and not isinstance(value, (dict, list)) else json.dumps(value, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
