"""The application floor: the `partition` CLI, run orchestration, the summary and the evaluate/reward glue.

It sits above solver/ and policies/ and may import every stage; nothing below it imports it.
"""
