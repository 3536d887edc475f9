"""The synthetic worlds: shapes scenes and their detector, scene edits, step-by-step drawings,
OpenMoji, photo crops and text chats.

They are both training data and the evaluation's ground truth (the same seeded code makes a
training conversation and the answer a benchmark checks against), so they sit below both:
`training/builders` turns them into conversations, `benchmarks/evaluation` scores against them,
and neither imports the other. `conversation_writer.py` stores a world's conversations in the
training data format (JSONL + PNGs), for the data builders and for the benchmarks that train
on data of their own. A world may import `vlm` (image helpers, the cache folder, the
backbone) and nothing else of the project.
"""
