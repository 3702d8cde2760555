"""The toy model's training data: the exact loop layout, result tokens masked out."""

from __future__ import annotations

from research.protocol import format_result, render_prompt
from research.testbed.toy_model import ToyRecipe, index_world, train_tokenizer, training_examples
from research.testbed.world import make_world


def test_training_examples_mask_prompt_and_results_and_teach_turns_and_eos(tmp_path, embedder):
    recipe = ToyRecipe(chains=10)
    world = make_world(recipe.seed, chains=recipe.chains)
    tokenizer = train_tokenizer(recipe)
    index = index_world(world, "train", tmp_path / "idx", embedder=embedder)
    examples = training_examples(world, index, tokenizer, recipe.top_k)
    questions = [q for q in world.questions("train") if q.type != "comparison"]
    assert len(examples) == len(questions)
    for q, (ids, labels) in zip(questions, examples, strict=True):
        assert len(ids) == len(labels)
        taught = [t for t, lab in zip(ids, labels, strict=True) if lab != -100]
        assert tokenizer.decode(taught) == "".join(q.turns) + "<|endoftext|>"
        masked = tokenizer.decode([t for t, lab in zip(ids, labels, strict=True) if lab == -100])
        prompt = render_prompt(q.question, "base")
        assert masked.startswith(prompt)
        assert masked[len(prompt) :].count(" <result>\n") == len(q.queries)
    hits = index.search([questions[0].queries[0]], k=1)[0]
    assert format_result(hits) in tokenizer.decode(examples[0][0])


def test_the_tokenizer_splits_held_out_names_into_known_pieces():
    recipe = ToyRecipe(chains=50)
    tokenizer = train_tokenizer(recipe)
    world = make_world(recipe.seed, chains=recipe.chains)
    for chain in world.test:
        pieces = tokenizer.tokenize(" " + chain.founder)
        assert tokenizer.convert_tokens_to_string(pieces) == " " + chain.founder
        assert len(pieces) >= 2  # names are not whole tokens: the model must copy them piece by piece
