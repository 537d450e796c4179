"""llama.cpp's OpenAI-compatible server (llama-cpp-python) in embeddings mode with
mean pooling: one vector per input, as OpenAI's /v1/embeddings returns.

llama.cpp's own server takes `--pooling mean`; the llama-cpp-python server has no
such flag and, for a chat model without pooling metadata (SmolLM2), would return one
vector per token. This launcher sets the pooling type every model it loads defaults
to, then runs the stock server with the given arguments (used by
scripts/local-model.sh start-embeddings).
"""

import functools
import sys

import llama_cpp

_init = llama_cpp.Llama.__init__


@functools.wraps(_init)
def _mean_pooled(self, *args, **kwargs):
    kwargs.setdefault("pooling_type", llama_cpp.LLAMA_POOLING_TYPE_MEAN)
    _init(self, *args, **kwargs)


llama_cpp.Llama.__init__ = _mean_pooled

from llama_cpp.server.__main__ import main  # noqa: E402  (after the patch)

if __name__ == "__main__":
    sys.exit(main())
