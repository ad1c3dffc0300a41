"""The shipped recipes (config/recipes) parse, and every chain of them can be rebuilt from the recipes alone:
each checkpoint a recipe starts from is either shared pretrained weights or written by another recipe."""
from __future__ import annotations

from pathlib import Path

import pytest

from robot_compress.compress.recipe import load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "config" / "recipes").glob("*.yaml"))


def test_there_are_recipes():
    assert len(RECIPES) >= 10


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses_and_is_named_after_its_file(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    assert recipe.stages


def test_every_checkpoint_comes_from_shared_weights_or_another_recipe():
    recipes = [load_recipe(p) for p in RECIPES]
    outputs = {r.output_dir.rstrip("/") + "/": r.name for r in recipes if r.output_dir}
    for r in recipes:
        for spec in (r.teacher, r.student):
            ckpt = spec.checkpoint if spec is not None else None
            if ckpt is None or ckpt.startswith("../shared/weights/"):
                continue
            producers = [name for prefix, name in outputs.items() if ckpt.startswith(prefix)]
            assert producers, f"{r.name}: checkpoint {ckpt} is written by no recipe in config/recipes"
            assert producers != [r.name], f"{r.name}: starts from its own output {ckpt}"
