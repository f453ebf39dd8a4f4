"""Framework-free generation: `GenerationConfig` (`config`), argument resolution and beam bookkeeping shared by the
three backends' `generate()` (`utils`), and streamers (`streamers`).
"""
