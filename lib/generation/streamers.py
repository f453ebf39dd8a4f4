"""Streamers: `generate(..., streamer=...)` hands them tokens as they are produced (framework-free).

`generate()` calls `streamer.put(tokens)` once with the prompt (B, P) and then once per step with the new
tokens (B,), as NumPy arrays, and `streamer.end()` when it stops. Streaming needs one Python call per
step, so the compiled TensorFlow / Flax loops fall back to their step-by-step path when a streamer is given.

`TextIteratorStreamer` is the one to hand to a web app or another thread: run `generate()` in a thread and
iterate over the streamer where the text is needed.
"""

from __future__ import annotations

import queue
import sys
from typing import Any, TextIO

import numpy as np

__all__ = ["BaseStreamer", "TextStreamer", "TextIteratorStreamer"]


class BaseStreamer:
    """The interface `generate()` calls."""

    def put(self, value: np.ndarray) -> None:
        """Receive token ids: the (B, P) prompt first, then (B,) per generated step."""
        raise NotImplementedError

    def end(self) -> None:
        """Generation has stopped."""
        raise NotImplementedError


class TextStreamer(BaseStreamer):
    """Print decoded text as soon as it is stable (batch size 1 only).

    Text is printed up to the last complete word: a token can still change how the previous bytes decode
    (byte-level BPE splits characters), so the tail after the last space waits for the next token or `end()`.

    Args:
        tokenizer: anything with `decode(ids, **decode_kwargs) -> str`.
        skip_prompt: do not print the prompt.
        file: where to print (default sys.stdout). **decode_kwargs: passed to `tokenizer.decode`.
    """

    def __init__(self, tokenizer: Any, skip_prompt: bool = False, file: TextIO | None = None,
                 **decode_kwargs: Any) -> None:
        self.tokenizer = tokenizer
        self.skip_prompt = skip_prompt
        self.file = file
        self.decode_kwargs = decode_kwargs
        self.token_cache: list[int] = []
        self.printed = 0
        self.next_is_prompt = True

    def put(self, value: np.ndarray) -> None:
        value = np.asarray(value)
        if value.ndim > 1 and value.shape[0] > 1:
            raise ValueError(f"TextStreamer only supports batch size 1, got tokens of shape {value.shape}")
        if self.skip_prompt and self.next_is_prompt:
            self.next_is_prompt = False
            return
        self.next_is_prompt = False
        self.token_cache.extend(int(t) for t in value.reshape(-1))
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        if text.endswith("\n"):
            printable = text[self.printed :]
            self.token_cache, self.printed = [], 0
        elif text.endswith("\ufffd"):
            printable = ""  # an incomplete UTF-8 character: wait for its other bytes
        else:
            stable = text.rfind(" ") + 1
            printable = text[self.printed : max(stable, self.printed)]
            self.printed = max(stable, self.printed)
        self.on_finalized_text(printable)

    def end(self) -> None:
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs) if self.token_cache else ""
        printable = text[self.printed :]
        self.token_cache, self.printed = [], 0
        self.next_is_prompt = True
        self.on_finalized_text(printable, stream_end=True)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        """Write `text` (and a newline at the end of the stream); override to send it elsewhere."""
        file = self.file if self.file is not None else sys.stdout
        print(text, flush=True, end="" if not stream_end else "\n", file=file)


class TextIteratorStreamer(TextStreamer):
    """Collect the decoded text in a queue and hand it out by iteration (from another thread).

    Usage: `streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)`, then
    `threading.Thread(target=model.generate, args=(input_ids,), kwargs={"streamer": streamer}).start()` and
    `for chunk in streamer: ...` (chunks as they become stable; the iteration ends when generate() ends).

    Args:
        tokenizer, skip_prompt, **decode_kwargs: as for TextStreamer.
        timeout: seconds to wait for the next chunk before `queue.Empty` is raised (None: wait forever).
    """

    def __init__(self, tokenizer: Any, skip_prompt: bool = False, timeout: float | None = None,
                 **decode_kwargs: Any) -> None:
        super().__init__(tokenizer, skip_prompt, **decode_kwargs)
        self.text_queue: queue.Queue = queue.Queue()
        self.stop_signal = None
        self.timeout = timeout

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        """Queue `text` (and the end-of-stream signal at the end)."""
        if text:
            self.text_queue.put(text, timeout=self.timeout)
        if stream_end:
            self.text_queue.put(self.stop_signal, timeout=self.timeout)

    def __iter__(self) -> TextIteratorStreamer:
        return self

    def __next__(self) -> str:
        value = self.text_queue.get(timeout=self.timeout)
        if value is self.stop_signal:
            raise StopIteration
        return value
