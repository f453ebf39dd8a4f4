"""The embedded tiny GPT-2 (`embedded`: its path and how it is trained) and `twinformers demo` (`run`).
"""
