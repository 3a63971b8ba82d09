"""Token ids in, text deltas out: incremental detokenization and text-level stop sequences.

Detokenization is the `tokenizers` library's `DecodeStream`, which holds back bytes until they
form whole UTF-8 characters. Stop sequences are matched on text, not tokens (a stop string may
span tokens or end inside one), and text that could still turn out to be the start of a stop
sequence is held back, so a stream never shows a stop sequence in part: whatever was emitted is a
prefix of the final text.
"""

from __future__ import annotations

from tokenizers.decoders import DecodeStream

REPLACEMENT = "\ufffd"  # what decoding makes of bytes that are not (yet) a whole UTF-8 character


class TextAssembler:
    def __init__(self, backend_tokenizer, stop: tuple[str, ...] = ()):
        self._tokenizer = backend_tokenizer
        self._decoder = DecodeStream(skip_special_tokens=True)
        self._stop = tuple(stop)
        self._ids: list[int] = []
        self.text = ""
        self._emitted = 0
        self.stopped = False

    def add(self, token_id: int) -> tuple[str, bool]:
        """Feed one generated token: (the text that can be shown now, whether a stop sequence ended it)."""
        self._ids.append(token_id)
        piece = self._decoder.step(self._tokenizer, token_id)
        if piece:
            self.text += piece
        return self._cut_or_emit()

    def flush(self) -> str:
        """At the end: what was held back. Bytes that never formed a whole character (a reply cut by
        max_tokens inside a multi-byte character) are dropped: a plain `decode` would end the text
        with U+FFFD, which the longer reply of the same seed does not have at that place."""
        if not self.stopped:
            whole = self._tokenizer.decode(self._ids, skip_special_tokens=True)
            if whole.startswith(self.text):
                # DecodeStream held back only a tail ending in U+FFFD: drop the replacement characters it ends with
                self.text += whole[len(self.text) :].rstrip(REPLACEMENT)
            delta, stopped = self._cut_or_emit()
            if not stopped:
                return delta + self._emit(len(self.text))
            return delta
        return ""

    def _cut_or_emit(self) -> tuple[str, bool]:
        cut = self._first_stop()
        if cut is not None:
            self.text, self.stopped = self.text[:cut], True
            return self._emit(cut), True
        return self._emit(len(self.text) - self._held_back()), False

    def _emit(self, end: int) -> str:
        delta = self.text[self._emitted : end]
        self._emitted = max(self._emitted, end)
        return delta

    def _first_stop(self) -> int | None:
        # Only the unemitted tail can hold a match: anything that could have started one earlier was held back.
        hits = [i for i in (self.text.find(s, self._emitted) for s in self._stop) if i >= 0]
        return min(hits) if hits else None

    def _held_back(self) -> int:
        """Length of the longest suffix of the unemitted text that is a proper prefix of a stop sequence."""
        tail = self.text[self._emitted :]
        best = 0
        for s in self._stop:
            for k in range(min(len(s) - 1, len(tail)), best, -1):
                if tail.endswith(s[:k]):
                    best = k
                    break
        return best
