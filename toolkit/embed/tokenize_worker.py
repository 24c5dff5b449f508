"""Entry point of a tokenizer worker process (`toolkit.embed.tokenize_procs`)."""

import os

os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker: the pool is the parallelism

from toolkit.embed.tokenize_procs import worker  # noqa: E402

if __name__ == "__main__":
    worker()
