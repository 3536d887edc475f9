"""The synthetic worlds: shapes scenes and their detector, scene edits, step-by-step drawings,
OpenMoji, photo crops and text chats.

They are both training data and the evaluation's ground truth (the same seeded code makes a
training conversation and the answer a benchmark checks against), so they sit below both:
`training/builders` turns them into conversations, `benchmarks/evaluation` scores against them,
and neither imports the other. A world may import `vlm` (image helpers, the cache folder, the
backbone) and nothing else of the project.
"""
